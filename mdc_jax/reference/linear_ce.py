"""Reference for the fused linear + softmax cross-entropy head (seed 000 §6.3.1): the plain head,
which holds the N × K logits, for ``jax.grad`` to differentiate."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import linear_ce
from ._sampling import integers, numpy_rng, probability_rows, uniform

SEED = "000_3fed0c34b422d74e.txt"


def linear_softmax_cross_entropy(Z, W, b, labels, *, reduction="mean", ignore_index=None, block_size=None,
                                 z_loss=0.0, label_smoothing=0.0, softcap=None, return_lse=False):
    """``softmax(Z W + 1bᵀ)`` cross-entropy with the logits held whole (``block_size`` is ignored): capped to
    ``c·tanh(A/c)``, the targets smoothed to ``(1 − α) Y + α (Y1)/K``, plus ``z·(1ᵀy_i)·lse_i²`` per token."""
    del block_size
    A = Z @ W + b[None, :]
    if softcap is not None:
        A = softcap * jnp.tanh(A / softcap)
    K = A.shape[-1]
    if labels.ndim == 2:
        Y, valid = labels, jnp.ones(labels.shape[0], bool)
    else:
        valid = labels != ignore_index if ignore_index is not None else jnp.ones(labels.shape, bool)
        Y = jax.nn.one_hot(jnp.where(valid, labels, -1), K, dtype=A.dtype)  # -1 (ignored): a zero row
    ysum = jnp.sum(Y, axis=-1)
    Y = (1 - label_smoothing) * Y + label_smoothing * ysum[:, None] / K
    lse = jax.nn.logsumexp(A, axis=-1)
    losses = -jnp.sum(Y * jax.nn.log_softmax(A, axis=-1), axis=-1) + z_loss * ysum * lse**2
    losses = jnp.where(valid, losses, 0.0)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = jnp.sum(losses)
    else:
        loss = jnp.sum(losses) / jnp.maximum(jnp.sum(valid), 1).astype(losses.dtype)
    return (loss, lse) if return_lse else loss


def linear_ce_case(seed, n: int, d: int, k: int, dtype, *, soft: bool = False, scale: float = 1.0):
    """Random ``(Z, W, b, labels)``: integer labels in ``[0, k)``, or soft label rows."""
    rng = numpy_rng(seed)
    Z, W, b = uniform(rng, (n, d), dtype, scale), uniform(rng, (d, k), dtype, 2.0 / d**0.5), uniform(rng, (k,), dtype, 0.5)
    labels = probability_rows(rng, (n, k), dtype, one_hot=False) if soft else jnp.asarray(rng.integers(0, k, n), jnp.int32)
    return Z, W, b, labels


def sample_linear_ce(key, dtype):
    rng = numpy_rng(key)
    n, d, k = integers(rng, 3, 1, 9)
    return linear_ce_case(rng, n, d, max(k, 2), dtype)


register_rule(RuleSpec(
    "linear_softmax_cross_entropy", f"{SEED} §6.3.1 eq. 43-44, blocked",
    lambda Z, W, b, y: linear_ce.linear_softmax_cross_entropy(Z, W, b, y, block_size=(2, 3)),
    lambda Z, W, b, y: linear_softmax_cross_entropy(Z, W, b, y), sample_linear_ce, argnums=(0, 1, 2),
    reference_name=f"{__name__}.linear_softmax_cross_entropy"))
