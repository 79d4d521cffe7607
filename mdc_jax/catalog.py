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
