"""Reference for the RNN rule (seed 000 §6.4): the forward pass as a plain ``lax.scan``.

``params`` is ``(W, U, b, V, c)`` (an ``RNNParams`` works); ``X`` is ``(τ, N, D)`` time-major. Integer
token ids ``X`` ``(τ, N)`` and integer labels ``Y`` ``(τ, N)`` are made one-hot, as the rule's docstring
says they stand for (an ``ignore_index`` label: the zero row). The fused head's options go to the
linear_ce reference's loss of each step's logits, held whole.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import linear_ce, rnn
from ._sampling import fan_in_weights, integers, numpy_rng, probability_rows, uniform
from .linear_ce import linear_softmax_cross_entropy

SEED = "000_3fed0c34b422d74e.txt"


def _step(params, Z, X_t):
    W, U, b, V, c = params
    Z = jnp.tanh(Z @ W + X_t @ U + b[None, :])  # A_t = Z_{t−1}W + X_tU + 1bᵀ,  Z_t = tanh(A_t)
    return Z, Z @ V + c[None, :]  # O_t = Z_tV + 1cᵀ


def _dense(A, width, dtype):
    return jax.nn.one_hot(A, width, dtype=dtype) if jnp.issubdtype(A.dtype, jnp.integer) else A


def rnn_loss_and_state(params, Z0, X, Y, *, ignore_index=None, head_options=None, **head):
    """(J, Z_τ) with J = Σ_t −(1/N) ln(s¹(O_t))·Y_t, differentiated by autodiff (``head``, ``block_size`` and
    ``checkpoint_every`` are ignored: the reference forms every logit and keeps every state). With
    ``head_options``, each step's loss is the linear_ce reference's sum over the ``N`` tokens, over ``N``."""
    del head
    if ignore_index is not None:
        Y = jnp.where(Y == ignore_index, -1, Y)  # one_hot(-1): the zero row
    X, Y = _dense(X, params[1].shape[0], Z0.dtype), _dense(Y, params[3].shape[1], Z0.dtype)
    V, c = params[3], params[4]
    options = {} if head_options is None else linear_ce.head_options("reference rnn_loss", head_options)._asdict()

    def step(carry, xs):
        Z, J = carry
        if head_options is None:
            Z, O = _step(params, Z, xs[0])
            return (Z, J - jnp.sum(xs[1] * jax.nn.log_softmax(O, axis=-1)) / X.shape[1]), None
        Z = _step(params, Z, xs[0])[0]
        return (Z, J + linear_softmax_cross_entropy(Z, V, c, xs[1], reduction="sum", **options) / X.shape[1]), None

    (Z, J), _ = jax.lax.scan(step, (Z0, jnp.zeros((), jnp.result_type(Z0, X, Y, *params))), (X, Y))
    return J, Z


def rnn_loss(params, Z0, X, Y, **options):
    return rnn_loss_and_state(params, Z0, X, Y, **options)[0]


def rnn_forward(params, Z0, X):
    """(Z_τ, O) with the logits O stacked as ``(τ, N, K)``."""
    return jax.lax.scan(lambda Z, X_t: _step(params, Z, X_t), Z0, _dense(X, params[1].shape[0], Z0.dtype))


def rnn_case(seed, tau: int, n: int, d: int, h: int, k: int, dtype, *, one_hot: bool = True,
             weight_scale: float = 1.0):
    """Random ``(params, Z0, X, Y)``: weights ``U(±scale·2/√fan_in)`` (the states are not saturated),
    biases ``U(±0.5)``, ``Z0`` in ``[−0.9, 0.9)``, ``X`` in ``[−1, 1)``, one-hot (or soft) targets."""
    rng = numpy_rng(seed)
    w = lambda shape: fan_in_weights(rng, shape, dtype, weight_scale)
    params = rnn.RNNParams(w((h, h)), w((d, h)), uniform(rng, (h,), dtype, 0.5), w((h, k)), uniform(rng, (k,), dtype, 0.5))
    Z0, X = uniform(rng, (n, h), dtype, 0.9), uniform(rng, (tau, n, d), dtype)
    return params, Z0, X, probability_rows(rng, (tau, n, k), dtype, one_hot)


def sample_rnn(key, dtype):
    rng = numpy_rng(key)
    tau, n, d, h, k = integers(rng, 5, 1, 7)
    return rnn_case(rng, tau, n, d, h, max(k, 2), dtype, one_hot=False)


register_rule(RuleSpec("rnn", f"{SEED} §6.4 final equations", rnn.rnn_loss, rnn_loss, sample_rnn))
