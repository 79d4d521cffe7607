"""The loss Hessians of mdc-jax's outputs, applied and factored: the primitives every curvature
quantity is assembled from (as BackPACK's ``sqrt_hessian`` / ``sqrt_hessian_sampled``).

Each example's loss ``ℓ_i`` is a function of its output row ``o_i`` (the logits ``a_{L,i}`` of a
classifier, ``o_{t,i}`` of the RNN at every step, the output ``z_{L,i}`` of a regressor). Its Hessian
``H_i`` with respect to that row is

    classification (§4.3.5, §6.3.1):  H_i = (1ᵀy_i)(diag(p_i) − p_i p_iᵀ),   p_i = s¹(o_i)
    regression (§6.2):                H_i = I

(``1ᵀy_i`` is kept, as everywhere in mdc-jax: ``H_i`` is the Hessian of ``−ln s¹(o_i)·y_i`` for any
non-negative row ``y_i``). A **symmetric factor** ``F_i`` (``H_i = F_i F_iᵀ``) gives the GGN's columns:
``G = (1/N) Σ_i (J_iᵀF_i)(J_iᵀF_i)ᵀ``, so back-propagating ``F``'s columns through the closed-form backward
gives every exact quantity. For the softmax (Σ_k p_k = 1)

    F_i = √(1ᵀy_i) (diag(√p_i) − p_i √p_iᵀ):   F_iF_iᵀ = (1ᵀy_i)(diag(p) − 2ppᵀ + p (√pᵀ√p) pᵀ) = H_i.

A **sampled factor** ``F̂_i`` (``M`` columns) has ``E[F̂_i F̂_iᵀ] = H_i``: the Monte-Carlo quantities. For the
softmax, column ``m`` is ``√(1ᵀy_i / M) (p_i − e_{ŷ_m})`` with ``ŷ_m ~ Cat(p_i)`` (the gradient of the loss
at a label drawn from the model, whose outer product has mean ``diag(p) − ppᵀ``); for regression it is
``ε_m / √M``, ``ε_m ~ N(0, I)``.

Columns are a **leading axis**: a factor of rows ``(..., K)`` is ``(C, ..., K)`` (``C = K`` exact, ``M``
sampled), the layout in which the rules' recursions propagate many columns at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..softmax import softmax_vjp


def hessian_vp(task: str, P, w, dO):
    """``H_i do_i`` row by row, without forming ``H_i``: ``w ⊙ (diag(p) − ppᵀ) do`` (§4.3.5's
    :func:`~mdc_jax.rules.softmax.softmax_vjp`, ``∇s`` being symmetric) for classification, ``do`` for
    regression. ``P`` the probabilities ``(..., K)``, ``w`` the row sums ``1ᵀy`` ``(..., 1)``."""
    if task == "regression":
        return dO
    return w * softmax_vjp(P, dO)


def sqrt_hessian(task: str, P, w, start=0, size: int | None = None):
    """The exact symmetric factor, columns first: ``F[c, ..., k]`` with ``Σ_c F[c]_{·k} F[c]_{·k'} = H_{kk'}``,
    shape ``(K, ..., K)``; or only its columns ``start .. start + size − 1`` (``start`` may be traced: a chunk
    of a ``lax.scan`` builds its own columns, never all ``K``). ``P`` the probabilities (any array of the
    output's shape for regression), ``w`` the row sums ``(..., 1)`` (unused for regression)."""
    K = P.shape[-1]
    size = K if size is None else size
    columns = start + jnp.arange(size, dtype=jnp.result_type(start))  # a traced int32 start stays int32
    eye = jax.nn.one_hot(columns, K, dtype=P.dtype).reshape((size,) + (1,) * (P.ndim - 1) + (K,))
    if task == "regression":
        return jnp.broadcast_to(eye, (size, *P.shape))
    r = jnp.sqrt(P)  # √p
    r_c = jnp.moveaxis(jax.lax.dynamic_slice_in_dim(r, start, size, axis=-1), -1, 0)[..., None]  # √p_c, (size, ..., 1)
    return jnp.sqrt(w)[None] * (eye * r[None] - P[None] * r_c)  # √w (δ_ck √p_c − p_k √p_c)


def sampled_sqrt_hessian(task: str, key, P, w, mc_samples: int):
    """A sampled factor, ``M`` columns first, ``(M, ..., K)``, with ``E[Σ_m F̂[m]_{·k} F̂[m]_{·k'}] = H_{kk'}``:
    ``√(w/M) (p − e_ŷ)``, ``ŷ ~ Cat(p)`` drawn with ``key`` (classification), ``ε/√M``, ``ε ~ N(0, I)``
    (regression)."""
    M = mc_samples
    if task == "regression":
        return jax.random.normal(key, (M, *P.shape), P.dtype) / jnp.sqrt(jnp.asarray(M, P.dtype))
    logits = jnp.log(jnp.broadcast_to(P, (M, *P.shape)))
    labels = jax.random.categorical(key, logits, axis=-1)
    onehot = jax.nn.one_hot(labels, P.shape[-1], dtype=P.dtype)
    return jnp.sqrt(w / M)[None] * (P[None] - onehot)
