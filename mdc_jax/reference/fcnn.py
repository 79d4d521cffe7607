"""Reference for the FCNN rules (seed 000 §6.1–6.3): the forward pass alone, for ``jax.grad``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..activations import get_activation
from ..registry import RuleSpec, register_rule
from ..rules import fcnn
from ._sampling import fan_in_weights, integers, numpy_rng, probability_rows, uniform

SEED = "000_3fed0c34b422d74e.txt"


def _act(name):
    return name.fn if hasattr(name, "fn") else get_activation(name).fn


def _mlp(params, X, activations):
    Z = X
    for (W, b), name in zip(params, activations, strict=False):
        Z = _act(name)(Z @ W + b[None, :])
    return Z


def l2_penalty(params):
    """``½ Σ_j W_j·W_j`` (biases are not penalised), in plain JAX."""
    return sum(jnp.sum(W * W) for W, _ in params) / 2


def fcnn_regression_loss(params, X, Y, activations, l2=0.0):
    """J = (1/2N)(Z_L − Y)·(Z_L − Y) + (λ/2) Σ W_j·W_j, differentiated by autodiff."""
    R = _mlp(params, X, activations) - Y
    return jnp.sum(R * R) / (2 * X.shape[0]) + l2 * l2_penalty(params)


def fcnn_classification_loss(params, X, Y, activations, l2=0.0, **head):
    """J = −(1/N) ln(s¹(A_L))·Y + (λ/2) Σ W_j·W_j, differentiated by autodiff; integer labels ``Y`` ``(N,)``
    are made one-hot (``head`` options are ignored: the reference forms every logit)."""
    del head
    Z = _mlp(params[:-1], X, activations)
    W, b = params[-1]
    logp = jax.nn.log_softmax(Z @ W + b[None, :], axis=-1)
    if jnp.issubdtype(Y.dtype, jnp.integer):
        Y = jax.nn.one_hot(Y, W.shape[1], dtype=logp.dtype)
    return -jnp.sum(Y * logp) / X.shape[0] + l2 * l2_penalty(params)


# --------------------------------------------------------------------------------------------
# Random cases


def mlp_case(seed, n: int, dims, dtype, *, task: str = "classification", one_hot: bool = True,
             weight_scale: float = 1.0):
    """Random ``(params, X, Y)`` for widths ``dims[0] → … → dims[-1]`` and ``n`` samples.

    Weights ``U(±scale·2/√fan_in)``, biases ``U(±0.5)``, ``X`` in ``[−1, 1)``. ``Y``: for
    ``task="classification"`` one-hot (or soft, ``one_hot=False``) rows; for ``"regression"``
    targets in ``[−1, 1)``. ``seed``: an int, a NumPy generator or a JAX key.
    """
    rng = numpy_rng(seed)
    params = [(fan_in_weights(rng, (a, b), dtype, weight_scale), uniform(rng, (b,), dtype, 0.5))
              for a, b in zip(dims[:-1], dims[1:], strict=True)]
    X = uniform(rng, (n, dims[0]), dtype)
    if task == "classification":
        return params, X, probability_rows(rng, (n, dims[-1]), dtype, one_hot)
    return params, X, uniform(rng, (n, dims[-1]), dtype)


def _sampler(task: str, layers: int):
    def sample(key, dtype):
        rng = numpy_rng(key)
        n, *dims = integers(rng, layers + 2, 1, 12)
        if task == "classification":
            dims[-1] = max(dims[-1], 2)
        params, X, Y = mlp_case(rng, n, dims, dtype, task=task, one_hot=False)
        return params, X, Y, jnp.asarray(0.05, dtype)

    return sample


# Registry entries: every activation appears in one of them.
_REG_ACTS = ("tanh", "softplus", "identity")
_CLS_ACTS = ("relu", "sigmoid")

register_rule(RuleSpec(
    "fcnn_regression", f"{SEED} §6.2 final equations",
    lambda p, X, Y, l2: fcnn.fcnn_regression_loss(p, X, Y, _REG_ACTS, l2),
    lambda p, X, Y, l2: fcnn_regression_loss(p, X, Y, _REG_ACTS, l2),
    _sampler("regression", 3), reference_name=f"{__name__}.fcnn_regression_loss"))
register_rule(RuleSpec(
    "fcnn_classification", f"{SEED} §6.3.1 eq. 43-44",
    lambda p, X, Y, l2: fcnn.fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2),
    lambda p, X, Y, l2: fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2),
    _sampler("classification", 3), reference_name=f"{__name__}.fcnn_classification_loss"))
register_rule(RuleSpec(
    "fcnn_classification_general", f"{SEED} §6.3 eq. 38-40",
    lambda p, X, Y, l2: fcnn.fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2, backward="general"),
    lambda p, X, Y, l2: fcnn_classification_loss(p, X, Y, _CLS_ACTS, l2),
    _sampler("classification", 3), reference_name=f"{__name__}.fcnn_classification_loss"))
