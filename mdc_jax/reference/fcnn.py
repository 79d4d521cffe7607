"""References for the FCNN rules (seed 000, §6.1–6.3) and softmax/sigmoid."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..activations import get_activation


def _act(name):
    return name.fn if hasattr(name, "fn") else get_activation(name).fn


def _mlp(params, X, activations):
    Z = X
    for (W, b), name in zip(params, activations):
        Z = _act(name)(Z @ W + b[None, :])
    return Z


def _l2_penalty(params):
    return sum(jnp.sum(W * W) for W, _ in params) / 2


def fcnn_regression_loss(params, X, Y, activations, l2=0.0):
    """J = (1/2N)(Z_L − Y)·(Z_L − Y) + (λ/2) Σ W_j·W_j, differentiated by autodiff."""
    R = _mlp(params, X, activations) - Y
    return jnp.sum(R * R) / (2 * X.shape[0]) + l2 * _l2_penalty(params)


def fcnn_classification_loss(params, X, Y, activations, l2=0.0):
    """J = −(1/N) ln(s¹(A_L))·Y + (λ/2) Σ W_j·W_j, differentiated by autodiff."""
    Z = _mlp(params[:-1], X, activations)
    W, b = params[-1]
    logp = jax.nn.log_softmax(Z @ W + b[None, :], axis=-1)
    return -jnp.sum(Y * logp) / X.shape[0] + l2 * _l2_penalty(params)


def softmax(A, axis=-1):
    return jax.nn.softmax(A, axis=axis)


def sigmoid(x):
    return jax.nn.sigmoid(x)
