"""What the per-example functions share: the quantities' names, the clipping bound's checks and the factors."""

from __future__ import annotations

import jax.numpy as jnp

from ... import _validation as v

QUANTITIES = ("batch_grad", "batch_l2", "grad_norm", "sum_grad_squared", "variance")


def check_clipping(fn: str, clip_norm, weights, N: int, dtype):
    """The clipping bound ``C > 0`` and the optional ``(N,)`` weights (finite, ``>= 0``), in ``dtype``."""
    v.require_positive(fn, "clip_norm", clip_norm, "the per-example gradient norm bound C > 0")
    v.require_weights(fn, "weights", weights, N)
    return None if weights is None else jnp.asarray(weights).astype(dtype)


def clip_factors(sq_norms, clip_norm):
    """``min(1, C/‖g_i‖)``; 1 for a zero gradient (nothing is divided by zero)."""
    norms = jnp.sqrt(sq_norms)
    C = jnp.asarray(clip_norm, sq_norms.dtype)
    return jnp.where(norms > C, C / jnp.where(norms > C, norms, 1), 1)
