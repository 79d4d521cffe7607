"""References for seed 004 ch. 3 (cross-entropy, binary and multinomial logistic regression).

Plain forward passes, written as the seed writes them (samples as rows here), for ``jax.grad`` and
``jax.hessian`` to differentiate. They are never used inside a rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(p, q):
    """H(p, q) = −pᵀ log[q] (§3.1, eq. 3.1), summed over every entry."""
    return -jnp.sum(p * jnp.log(q))


def logistic_loss(theta, X, y, l2=0.0):
    """−yᵀ log σ[Xθ] − (1 − y)ᵀ log σ[−Xθ] + λ/2 θᵀθ (§3.2; 1 − σ(z) = σ(−z))."""
    z = X @ theta
    nll = -jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
    return nll + l2 * jnp.sum(theta * theta) / 2


def multinomial_loss(Theta, X, Y, l2=0.0):
    """−Σ_i y_iᵀ log s(Θᵀx_i) + λ/2 Θ·Θ (§3.3), the softmax taken along each row of XΘ."""
    logP = jax.nn.log_softmax(X @ Theta, axis=1)
    return -jnp.sum(Y * logP) + l2 * jnp.sum(Theta * Theta) / 2
