"""A multi-layer perceptron over the FCNN rules (seed 000 §6.2–6.3).

``grad="closed"`` differentiates through the closed-form rules; ``grad="autodiff"`` through the
plain reference, so the same model trains either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

import mdc_jax
from mdc_jax import reference
from mdc_jax.activations import get_activation

GRADS = ("closed", "autodiff")


def init_mlp(key: jax.Array, dims: Sequence[int], dtype=jnp.float32) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-normal weights and zero biases for widths ``dims[0] → … → dims[-1]``."""
    keys = jax.random.split(key, len(dims) - 1)
    return [(jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / (m + n)).astype(dtype), jnp.zeros((n,), dtype))
            for k, m, n in zip(keys, dims[:-1], dims[1:])]


def mlp_forward(params, X, activations: Sequence[str]) -> jax.Array:
    """The logits ``A_L``: hidden layers use ``activations``, the last layer is linear."""
    Z = X
    for (W, b), name in zip(params[:-1], activations):
        Z = get_activation(name).fn(Z @ W + b[None, :])
    W, b = params[-1]
    return Z @ W + b[None, :]


def classification_loss(params, X, Y, activations: Sequence[str], l2: float = 0.0, grad: str = "closed"):
    """Softmax cross-entropy; ``grad`` picks the closed-form rule or the autodiff reference."""
    if grad == "closed":
        return mdc_jax.fcnn_classification_loss(params, X, Y, activations, l2)
    if grad == "autodiff":
        return reference.fcnn_classification_loss(params, X, Y, activations, l2)
    raise ValueError(f"grad must be one of {GRADS}; got {grad!r}.")


def accuracy(params, X, labels, activations: Sequence[str]) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp_forward(params, X, activations), axis=-1) == labels)
