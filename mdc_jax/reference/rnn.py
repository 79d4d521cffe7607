"""References for the RNN rule (seed 000, §6.4): the forward pass as a plain ``lax.scan``.

``params`` is ``(W, U, b, V, c)`` (an ``RNNParams`` works); ``X`` is ``(τ, N, D)`` time-major.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _step(params, Z, X_t):
    W, U, b, V, c = params
    Z = jnp.tanh(Z @ W + X_t @ U + b[None, :])  # A_t = Z_{t−1}W + X_tU + 1bᵀ,  Z_t = tanh(A_t)
    return Z, Z @ V + c[None, :]  # O_t = Z_tV + 1cᵀ


def rnn_loss_and_state(params, Z0, X, Y):
    """(J, Z_τ) with J = Σ_t −(1/N) ln(s¹(O_t))·Y_t, differentiated by autodiff."""

    def step(carry, xs):
        Z, J = carry
        Z, O = _step(params, Z, xs[0])
        return (Z, J - jnp.sum(xs[1] * jax.nn.log_softmax(O, axis=-1)) / X.shape[1]), None

    (Z, J), _ = jax.lax.scan(step, (Z0, jnp.zeros((), jnp.result_type(Z0, X, Y, *params))), (X, Y))
    return J, Z


def rnn_loss(params, Z0, X, Y):
    return rnn_loss_and_state(params, Z0, X, Y)[0]


def rnn_forward(params, Z0, X):
    """(Z_τ, O) with the logits O stacked as ``(τ, N, K)``."""
    return jax.lax.scan(lambda Z, X_t: _step(params, Z, X_t), Z0, X)
