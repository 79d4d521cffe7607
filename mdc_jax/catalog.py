"""mdc-jax's own entries in the rule registry: one per rule, with a sampler of valid random inputs.

Samplers draw shapes and values from the key, so each gradcheck seed sees a different problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import reference as ref
from .registry import RuleSpec, register_rule
from .rules import fcnn, rnn, softmax

SEED0 = "000_3fed0c34b422d74e.txt"
SEED4 = "004_c4a3fcbc5e77e7ce.txt"


def _ints(key, n, low, high):
    return [int(x) for x in jax.random.randint(key, (n,), low, high + 1)]


def _mlp_sample(key, dtype, classification: bool, layers: int):
    k_shape, k_w, k_x, k_y = jax.random.split(key, 4)
    n, *widths = _ints(k_shape, layers + 2, 1, 12)
    if classification:
        widths[-1] = max(widths[-1], 2)
    keys = jax.random.split(k_w, 2 * layers)
    params = [(jax.random.uniform(keys[2 * j], (a, b), dtype, -1, 1) / jnp.sqrt(a).astype(dtype),
               jax.random.uniform(keys[2 * j + 1], (b,), dtype, -0.5, 0.5))
              for j, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]
    X = jax.random.uniform(k_x, (n, widths[0]), dtype, -1, 1)
    if classification:
        Y = jax.nn.softmax(jax.random.normal(k_y, (n, widths[-1]), dtype) * 2, axis=-1)
    else:
        Y = jax.random.uniform(k_y, (n, widths[-1]), dtype, -1, 1)
    return params, X, Y, jnp.asarray(0.05, dtype)


_REG_ACTS = ("tanh", "softplus", "identity")
_CLS_ACTS = ("relu", "sigmoid")


def _fcnn_regression(p, X, Y, l2):
    return fcnn.fcnn_regression_loss(p, X, Y, _REG_ACTS, l2)


def _fcnn_regression_ref(p, X, Y, l2):
    return ref.fcnn_regression_loss(p, X, Y, _REG_ACTS, l2)


def _fcnn_classification(p, X, Y, l2):
    return fcnn.fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2)


def _fcnn_classification_general(p, X, Y, l2):
    return fcnn.fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2, backward="general")


def _fcnn_classification_ref(p, X, Y, l2):
    return ref.fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2)


def _matrix_sample(key, dtype):
    k_shape, k_a = jax.random.split(key)
    rows, cols = _ints(k_shape, 2, 1, 9)
    return (jax.random.uniform(k_a, (rows, cols), dtype, -4, 4),)


register_rule(RuleSpec("fcnn_regression", f"{SEED0} §6.2 final equations", _fcnn_regression,
                       _fcnn_regression_ref, lambda k, d: _mlp_sample(k, d, False, 3)))
register_rule(RuleSpec("fcnn_classification", f"{SEED0} §6.3.1 eq. 43-44", _fcnn_classification,
                       _fcnn_classification_ref, lambda k, d: _mlp_sample(k, d, True, 3)))
register_rule(RuleSpec("fcnn_classification_general", f"{SEED0} §6.3 eq. 38-40", _fcnn_classification_general,
                       _fcnn_classification_ref, lambda k, d: _mlp_sample(k, d, True, 3)))
register_rule(RuleSpec("softmax", f"{SEED0} §4.3.5; {SEED4} §2.3 eq. 2.10", softmax.softmax, ref.softmax,
                       _matrix_sample))
register_rule(RuleSpec("sigmoid", f"{SEED4} §2.2 eq. 2.4", softmax.sigmoid, ref.sigmoid, _matrix_sample))


def _rnn_sample(key, dtype):
    k_shape, kW, kU, kV, kb, kx, ky, kz = jax.random.split(key, 8)
    tau, n, d, h, k = _ints(k_shape, 5, 1, 7)
    k = max(k, 2)
    u = lambda key, shape, scale: jax.random.uniform(key, shape, dtype, -scale, scale)
    params = rnn.RNNParams(u(kW, (h, h), 1.0 / h**0.5), u(kU, (d, h), 1.0 / d**0.5), u(kb, (h,), 0.5),
                           u(kV, (h, k), 1.0 / h**0.5), jnp.zeros((k,), dtype))
    Y = jax.nn.softmax(jax.random.normal(ky, (tau, n, k), dtype) * 2, axis=-1)
    return params, u(kz, (n, h), 1.0), u(kx, (tau, n, d), 1.0), Y


register_rule(RuleSpec("rnn", f"{SEED0} §6.4 final equations", rnn.rnn_loss, ref.rnn_loss, _rnn_sample))


# --------------------------------------------------------------------------------------------
# Seed 004: cross-entropy, logistic regression; seed 000 §4.4 and §5: the matrix identities

from . import identities  # noqa: E402
from .rules import jacobians, logistic  # noqa: E402


def _logistic_sample(key, dtype):
    k_shape, kt, kx, ky = jax.random.split(key, 4)
    n, d = _ints(k_shape, 2, 1, 12)
    y = jax.random.bernoulli(ky, 0.5, (n,)).astype(dtype)
    return (jax.random.uniform(kt, (d,), dtype, -1, 1), jax.random.uniform(kx, (n, d), dtype, -2, 2), y,
            jnp.asarray(0.3, dtype))


def _multinomial_sample(key, dtype):
    k_shape, kt, kx, ky = jax.random.split(key, 4)
    n, d, k = _ints(k_shape, 3, 1, 8)
    k = max(k, 2)
    Y = jax.nn.one_hot(jax.random.randint(ky, (n,), 0, k), k, dtype=dtype)
    return (jax.random.uniform(kt, (d, k), dtype, -1, 1), jax.random.uniform(kx, (n, d), dtype, -2, 2), Y,
            jnp.asarray(0.3, dtype))


def _cross_entropy_sample(key, dtype):
    k_shape, kp, kq = jax.random.split(key, 3)
    (n,) = _ints(k_shape, 1, 2, 10)
    return (jax.nn.softmax(jax.random.normal(kp, (n,), dtype)), jax.nn.softmax(jax.random.normal(kq, (n,), dtype)))


def _vectors_and_matrices(spec: str):
    """A sampler for identity arguments: 'v' a vector of n, 'm' an n × n matrix, 'w' a
    well-conditioned n × n matrix (n·I plus noise: invertible, positive determinant)."""

    def sample(key, dtype):
        k_shape, *keys = jax.random.split(key, len(spec) + 1)
        (n,) = _ints(k_shape, 1, 1, 6)
        out = []
        for kind, k in zip(spec, keys):
            if kind == "v":
                out.append(jax.random.uniform(k, (n,), dtype, -1, 1))
            elif kind == "m":
                out.append(jax.random.uniform(k, (n, n), dtype, -1, 1))
            else:
                out.append(n * jnp.eye(n, dtype=dtype) + jax.random.uniform(k, (n, n), dtype, -1, 1))
        return tuple(out)

    return sample


register_rule(RuleSpec("cross_entropy", f"{SEED4} §3.1 eq. 3.1", jacobians.cross_entropy, ref.cross_entropy,
                       _cross_entropy_sample))
register_rule(RuleSpec("logistic_loss", f"{SEED4} §3.2 eq. 3.3-3.9", logistic.logistic_loss, ref.logistic_loss,
                       _logistic_sample))
register_rule(RuleSpec("multinomial_loss", f"{SEED4} §3.3, docs/derivations.md", logistic.multinomial_loss,
                       ref.multinomial_loss, _multinomial_sample))
for _name, _where, _spec in [
    ("linear", "§5 eq. 33", "vv"), ("quadratic", "§5", "vm"), ("bilinear", "§5", "vmv"),
    ("gram_quadratic", "§5", "vm"), ("trace_inverse_product", "§5 eq. 34", "mwm"), ("trace", "§4.4", "m"),
    ("inverse", "§4.4", "w"), ("det", "§4.4", "w"), ("logdet", "§4.4", "w"), ("outer_self", "§5 eq. 35-36", "v"),
]:
    register_rule(RuleSpec(f"identity_{_name}", f"{SEED0} {_where}", getattr(identities, _name),
                           getattr(ref, _name), _vectors_and_matrices(_spec)))
