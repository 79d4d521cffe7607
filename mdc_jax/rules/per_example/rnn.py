"""Per-example gradients of the §6.4 RNN: norms, statistics and clipping from one closed-form backward.

Seed: ``000_3fed0c34b422d74e.txt`` §6.4 (final equations), §6.3.1 (the head's error). Example ``i`` is
sequence ``i``; ``ℓ_i`` sums its tokens' losses and ``J = (1/N) Σ_i ℓ_i`` (a mean over sequences, never over
a data-dependent token count: DP-SGD needs that). ``W``, ``U``, ``b``, ``V``, ``c`` are shared over time, so

    g_i(W) = Σ_t z_{t−1,i} s_{t,i}ᵀ,   g_i(U) = Σ_t x_{t,i} s_{t,i}ᵀ,   g_i(b) = Σ_t s_{t,i},
    g_i(V) = Σ_t z_{t,i} h_{t,i}ᵀ,     g_i(c) = Σ_t h_{t,i}

(``s_t = ∇_{A_t}ℓ_i``, ``h_t = ∇_{O_t}ℓ_i``: the §6.4 recursion run from ``ℓ_i``, without ``1/N``), and

    ‖Σ_t a_t b_tᵀ‖² = Σ_{t,t'} (a_t·a_{t'}) (b_t·b_{t'}) = ⟨A_i A_iᵀ, B_i B_iᵀ⟩     (τ × τ Gram matrices)

costs ``τ²(d_a + d_b)`` per example against ``τ d_a d_b`` for the materialised ``g_i``; each weight takes the
cheaper (:func:`use_ghost_norm`, the mixed ghost norm of Bu et al. 2023). Token ids: ``x_t·x_{t'}`` is
``[x_t = x_{t'}]`` (one-hot rows never formed); ``U``'s norm is always the ghost one.

What is held: the forward's states ``Z_0..Z_τ`` (as the plain rule holds them) and the stack of ``s_t``
(``τ × N × H``), plus ``τ × τ`` Gram matrices one block of examples at a time. The plain head's ``h_t``
(``τ × N × K``, small where that head is used) is kept from the backward; with ``head="fused"`` no
``τ × N × K`` array exists: the head's Gram ``[h_t·h_{t'}]`` is accumulated in the fused head's own blocks
(:mod:`.head`). The clipped mean ``(1/N) Σ_i c_i g_i`` is the plain gradient's sums with each row of ``s_t``
(and ``h_t``) scaled by ``c_i``, chunk by chunk. With ``checkpoint_every`` the ``g_i`` are materialised
instead, segment by segment (:func:`_segment_batch_grads`).

Nothing here calls ``jax.grad``, ``jax.vjp`` or ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ... import _validation as v
from ...kernels import block_starts, fresh_mask
from .. import rnn, rnn_segments
from ..softmax import cross_entropy_error
from . import head as fused_head
from ._clip import QUANTITIES, check_clipping, clip_factors

# Examples whose τ × τ Grams are formed together: the batch of `lax.map` (small: the Grams and each example's
# rows are copies, a block of them at a time).
EXAMPLE_BLOCK = 4


def use_ghost_norm(tau: int, d_a: int, d_b: int) -> bool:
    """Whether ``‖Σ_t a_t b_tᵀ‖²`` is cheaper from the τ × τ Gram matrices (``τ²(d_a + d_b)``
    multiply-adds per example) than from the materialised ``d_a × d_b`` gradient (``τ d_a d_b``)."""
    return tau * (d_a + d_b) < d_a * d_b


# --------------------------------------------------------------------------------------------
# The §6.4 backward from ℓ_i: one per-step pass


class Rows(NamedTuple):
    """The arrays of one per-example pass, time-major: ``ell`` ``ℓ_i`` ``(N,)``; ``Zs`` ``Z_0..Z_{τ−1}``
    ``(τ/k, k, N, H)`` (the forward's residual) and ``Z_tau``; ``S`` every ``∇_{A_t}ℓ_i`` ``(τ/k, k, N, H)``;
    ``fused`` the fused head's (lse per token ``(N, τ)``, ``[h_t·h_{t'}]`` per example ``(N, τ, τ)``)."""

    ell: jax.Array
    Zs: jax.Array
    Z_tau: jax.Array
    S: jax.Array
    fused: tuple | None
    Hs: jax.Array | None = None


def _plain_head_error(Z_out, Y_k, V, c):
    """``(ln s¹(O_t), h_t = ∇_{O_t}ℓ_i, Y_t)`` for a stack of states: §6.3.1's error without ``1/N``."""
    logS = rnn.output_log_probs(Z_out, V, c)
    Y = rnn.dense_targets(Y_k, V.shape[1], logS.dtype)
    return logS, cross_entropy_error(jnp.exp(logS), Y), Y


def _per_step(params, Z0, X, Y, fused):
    """One forward, one per-step backward from ``ℓ_i``: :class:`Rows`."""
    V, c = params.V, params.c
    _, Z_tau, Zs = rnn.forward(params, Z0, X, None)
    k = Zs.shape[1]
    if fused is None:
        def head(Z_out, Y_k, ell):
            logS, H, Yd = _plain_head_error(Z_out, Y_k, V, c)
            return H @ V.T, ell - jnp.sum(Yd * logS, axis=(0, 2)), H

        out = rnn.backward(params, Zs, Z_tau, X, jnp.zeros_like(Z_tau), head, rnn.chunks(Y, k),
                           jnp.zeros(X.shape[1], Z_tau.dtype), per_step=True)
        return Rows(out.head_acc, Zs, Z_tau, out.steps, None, out.head_out)
    ell, HV, head = fused_head.head_rows(params, Zs, Z_tau, Y, fused)
    out = rnn.backward(params, Zs, Z_tau, X, jnp.zeros_like(Z_tau), lambda Z_out, HV_k, a: (HV_k, a, None),
                       rnn.chunks(HV, k), (), per_step=True)
    return Rows(ell, Zs, Z_tau, out.steps, head, None)


# --------------------------------------------------------------------------------------------
# Per-example squared norms: τ × τ Grams, a block of examples at a time


def _id_gram(ids, D):
    """``[x_t·x_{t'}]`` for token ids ``(n, τ)``, per row (one-hot rows; a zero row for an id outside ``[0, D)``)."""
    valid = (ids >= 0) & (ids < D)
    return (ids[:, :, None] == ids[:, None, :]) & valid[:, :, None] & valid[:, None, :]


def _gram(A):
    """``A_i A_iᵀ`` for each example's rows ``(n, τ, d)``: ``(n, τ, τ)``."""
    return jnp.einsum("nta,nsa->nts", A, A)


def _sq_norms(params, X, Y, rows: Rows):
    """``‖g_i(p)‖²`` per parameter, an ``RNNParams`` of ``(N,)`` arrays (module docstring), a block of
    :data:`EXAMPLE_BLOCK` examples at a time (their rows copied example-major, never the whole batch's)."""
    W, U, V = params.W, params.U, params.V
    tau, N = X.shape[0], X.shape[1]
    H, D, K = W.shape[0], U.shape[0], V.shape[1]
    Zs, S = rows.Zs.reshape(tau, N, H), rows.S.reshape(tau, N, H)
    ids, fused = rnn.is_ids(X), rows.fused is not None
    ghost_W, ghost_U, ghost_V = use_ghost_norm(tau, H, H), ids or use_ghost_norm(tau, D, H), use_ghost_norm(tau, H, K)
    nb = min(EXAMPLE_BLOCK, N)

    def sq(a, b, K_a, K_b, ghost):  # ‖Σ_t a_t b_tᵀ‖² per example, by the Grams or the materialised g_i
        g = None if ghost else jnp.einsum("nta,ntb->nab", a, b)
        return jnp.sum(K_a * K_b, axis=(1, 2)) if ghost else jnp.sum(g * g, axis=(1, 2))

    def block(out, xs):
        i, n0 = xs
        rows_of = lambda A: jnp.swapaxes(jax.lax.dynamic_slice_in_dim(A, n0, nb, axis=1), 0, 1)  # (nb, τ, ·)
        z = jnp.concatenate([rows_of(Zs), jax.lax.dynamic_slice_in_dim(rows.Z_tau, n0, nb)[:, None]], axis=1)
        s = rows_of(S)
        Ks, Kz = _gram(s), _gram(z)  # Kz: Z_0..Z_τ; its leading block pairs W's inputs, its trailing V's
        sW = sq(z[:, :-1], s, Kz[:, :-1, :-1], Ks, ghost_W)
        if ids:
            sU = jnp.sum(jnp.where(_id_gram(rows_of(X), D), Ks, 0), axis=(1, 2))
        else:
            x = rows_of(X)
            sU = sq(x, s, _gram(x) if ghost_U else None, Ks, ghost_U)
        if fused:
            Kh = jax.lax.dynamic_slice_in_dim(rows.fused[1], n0, nb).astype(Kz.dtype)
            sV = jnp.sum(Kz[:, 1:, 1:] * Kh, axis=(1, 2))
        else:
            h = rows_of(rows.Hs.reshape(tau, N, -1))
            Kh = _gram(h)
            sV = sq(z[:, 1:], h, Kz[:, 1:, 1:], Kh, ghost_V)
        norms = jnp.stack([sW, sU, jnp.sum(Ks, axis=(1, 2)), sV, jnp.sum(Kh, axis=(1, 2))], axis=1)  # (nb, 5)
        old = jax.lax.dynamic_slice_in_dim(out, n0, nb)
        return jax.lax.dynamic_update_slice_in_dim(out, jnp.where(fresh_mask(n0, i, nb)[:, None], norms, old), n0, 0), None

    starts = block_starts(N, nb)
    per, _ = jax.lax.scan(block, jnp.zeros((N, 5), S.dtype), (jnp.arange(len(starts), dtype=jnp.int32), starts))
    return rnn.RNNParams(*per.T)


# --------------------------------------------------------------------------------------------
# Weighted sums (1/N) Σ_i c_i g_i: the plain gradient's sums with rescaled rows, chunk by chunk


def _weighted_grads(params, X, rows: Rows, c, N):
    """``(1/N) Σ_i c_i g_i`` for ``W``, ``U``, ``b`` (and ``V``, ``c`` for the plain head; the fused head's come
    from its blocks): the plain gradient's sums with the rows of ``S`` and ``h_t`` scaled by ``c_i/N``,
    a block of steps at a time (walking back, as the backward does, so ``Z_t`` is the block's inputs shifted by one)."""
    H = params.W.shape[0]
    T = rows.Zs.shape[1]  # the rule's own chunks of steps (each rescaled block is a copy: keep them small)
    scale = (c / N).astype(rows.S.dtype)[None, :, None]
    ids, plain = rnn.is_ids(X), rows.fused is None

    def step(carry, xs):
        Z, dW, dU, db, dV, dc = carry
        Z_in, S_k, X_k, H_k = xs
        cS = S_k * scale
        dW = dW + jnp.einsum("tnh,tng->hg", Z_in, cS)  # Σ_t Z_{t−1}ᵀ diag(c) ∇_{A_t}/N
        if ids:  # row x_ti of U gets row i of c_i ∇_{A_t}/N
            dU = dU.at[rnn.id_rows(X_k, dU.shape[0]).reshape(-1)].add(cS.reshape(-1, H), mode="drop")
        else:
            dU = dU + jnp.einsum("tnd,tng->dg", X_k, cS)
        db = db + jnp.sum(cS, axis=(0, 1))
        if plain:
            Z_out = rnn.states_out(Z_in, Z)
            cH = H_k * scale
            dV = dV + jnp.einsum("tnh,tnk->hk", Z_out, cH)  # Σ_t Z_tᵀ diag(c) ∇_{O_t}/N
            dc = dc + jnp.sum(cH, axis=(0, 1))
        return (Z_in[0], dW, dU, db, dV, dc), None

    zeros = [jnp.zeros_like(p) for p in params]
    xs = (rows.Zs, rows.S, rnn.chunks(X, T), rows.Hs if plain else None)
    (_, *grads), _ = jax.lax.scan(step, (rows.Z_tau, *zeros), xs, reverse=True)
    return grads


def _materialised(params, X, rows: Rows):
    """Every ``g_i`` (``N`` copies of each parameter): ``batch_grad`` and the statistics built on it."""
    tau, N = X.shape[0], X.shape[1]
    H = params.W.shape[0]
    Zs, S = rows.Zs.reshape(tau, N, H), rows.S.reshape(tau, N, H)
    Z_out = rnn.states_out(Zs, rows.Z_tau)
    Xd = rnn.dense_targets(X, params.U.shape[0], S.dtype) if rnn.is_ids(X) else X
    Hs = rows.Hs.reshape(tau, N, -1)
    outer = lambda a, b: jnp.einsum("tna,tnb->nab", a, b)
    return rnn.RNNParams(outer(Zs, S), outer(Xd, S), jnp.sum(S, axis=0), outer(Z_out, Hs), jnp.sum(Hs, axis=0))


# --------------------------------------------------------------------------------------------
# checkpoint_every: every g_i materialised, segment by segment


def _segment_batch_grads(params, Z0, X, Y, k: int):
    """``ℓ`` ``(N,)`` and every ``g_i`` (an ``RNNParams`` of ``(N, *p.shape)``), summed chunk by chunk over the
    segments of ``k`` steps recomputed from their checkpoints (:func:`.rnn_segments.backward`): no state is held
    beyond the checkpoints and one segment, and no ``τ × τ`` Gram is formed (those need every step)."""
    V, c = params.V, params.c
    N, (D, H), K = X.shape[1], params.U.shape, V.shape[1]
    Z_tau, kept = rnn_segments.checkpoints(params, Z0, X, k)
    ids = rnn.is_ids(X)

    def head(Z_out, Y_k, acc):
        ell, gW, gU, gb, gV, gc = acc
        logS, H_k, Yd = _plain_head_error(Z_out, Y_k, V, c)
        return H_k @ V.T, (ell - jnp.sum(Yd * logS, axis=(0, 2)), gW, gU, gb,
                           gV + jnp.einsum("tnh,tnk->nhk", Z_out, H_k), gc + jnp.sum(H_k, axis=0)), None

    def tap(acc, S, Z_in, X_k):  # S: the chunk's ∇_{A_t}ℓ_i
        ell, gW, gU, gb, gV, gc = acc
        if ids:  # g_i(U): row x_ti gets s_ti
            gU = gU.at[jnp.arange(N)[None, :], rnn.id_rows(X_k, D)].add(S, mode="drop")
        else:
            gU = gU + jnp.einsum("tnd,tng->ndg", X_k, S)
        return ell, gW + jnp.einsum("tnh,tng->nhg", Z_in, S), gU, gb + jnp.sum(S, axis=0), gV, gc

    dtype = Z_tau.dtype
    zeros = lambda *shape: jnp.zeros(shape, dtype)
    acc = (zeros(N), zeros(N, H, H), zeros(N, D, H), zeros(N, H), zeros(N, H, K), zeros(N, K))
    out = rnn_segments.backward(params, kept, X, jnp.zeros_like(Z_tau), head, Y, acc, k, tap=tap)
    ell, *bg = out.head_acc
    return ell, rnn.RNNParams(*bg)


def _statistics(bg, quantities, out):
    """The requested statistics of the stacked ``g_i`` ``bg`` into ``out`` (which holds ``"grad"``)."""
    N = bg.W.shape[0]
    if "batch_grad" in quantities:
        out["batch_grad"] = bg
    sq = rnn.RNNParams(*(jnp.sum(jnp.square(g).reshape(N, -1), axis=1) for g in bg))
    if "batch_l2" in quantities:
        out["batch_l2"] = sq
    if "grad_norm" in quantities:
        out["grad_norm"] = jnp.sqrt(sum(sq))
    sgs = rnn.RNNParams(*(jnp.sum(g * g, axis=0) for g in bg))
    if "sum_grad_squared" in quantities:
        out["sum_grad_squared"] = sgs
    if "variance" in quantities:
        out["variance"] = rnn.RNNParams(*(s / N - m * m for s, m in zip(sgs, out["grad"])))
    return out


# --------------------------------------------------------------------------------------------
# Public API


def _prepare(fn, params, Z0, X, Y, head, block_size, ignore_index, head_options, checkpoint_every):
    """Checked inputs, the fused head's static description (None for the plain head) and the segment length."""
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y, tokens=True, ignore_index=ignore_index)
    options = rnn.check_options(fn, X, params, head=head, block_size=block_size, head_options=head_options,
                                checkpoint_every=checkpoint_every)
    fused = None if options.blocks is None else fused_head.describe(X, params, options)
    if fused is not None and checkpoint_every is not None:
        v.fail(fn, f"checkpoint_every={checkpoint_every} with head='fused': the segments' per-example gradients "
                   f"materialise N copies of V (N × H × K); clip the fused head without checkpoint_every.")
    return params, Z0, X, Y, fused, options.checkpoint_every


def rnn_quantities(params, Z0, X, Y, *, quantities: Sequence[str] = ("batch_l2", "grad_norm"), head: str = "plain",
                   block_size=None, ignore_index: int | None = None, head_options=None,
                   checkpoint_every: int | None = None) -> dict:
    """Loss, gradient and per-example gradient statistics of the §6.4 RNN, from one closed-form backward.

    Example ``i`` is sequence ``i`` (``X[:, i]``, ``Y[:, i]``, ``Z0[i]``); ``ℓ_i`` sums over its time steps and
    ``J = (1/N) Σ_i ℓ_i`` is :func:`mdc_jax.rnn_loss`. The weights are shared over time, so
    ``g_i(W) = Σ_t z_{t−1,i} s_{t,i}ᵀ``; its norm is taken from the τ × τ Gram matrices of ``z`` and ``s`` or
    from the materialised ``g_i``, whichever costs fewer multiply-adds for that parameter's shape
    (:func:`use_ghost_norm`); for token ids ``x_t·x_{t'} = [x_t = x_{t'}]``. ``"sum_grad_squared"``,
    ``"variance"`` and ``"batch_grad"`` materialise ``g_i`` (``N`` copies of each parameter; the plain head only).

    Args:
      params, Z0, X, Y: as in :func:`mdc_jax.rnn_loss`: ``X`` floating ``(τ, N, D)`` or integer token ids
        ``(τ, N)`` (rows of ``U``, gathered, never one-hot); ``Y`` floating ``(τ, N, K)`` or integer labels ``(τ, N)``.
      quantities: as in :func:`mdc_jax.per_example.fcnn_quantities`.
      head, block_size: as in :func:`mdc_jax.rnn_loss`; with ``head="fused"`` the head's per-example norms come
        from its own blocks (no ``τ·N × K`` logits).
      ignore_index: with integer ``Y``, a label whose tokens add nothing to ``ℓ_i`` (nor to its gradient).
      head_options: the fused head's ``z_loss``, ``label_smoothing``, ``softcap`` (see
        :func:`mdc_jax.linear_softmax_cross_entropy`), ``head="fused"`` only.
      checkpoint_every: ``k`` in ``[1, τ]``: the states are recomputed segment by segment from every ``k``-th
        (as in :func:`mdc_jax.rnn_loss`) and every ``g_i`` is materialised, summed segment by segment: ``N`` copies
        of the parameters instead of the ``τ·N·H`` states and ``τ × τ`` Grams, the smaller for long sequences
        (``τH`` above the parameter count). The plain head only.

    Returns:
      A dict with ``"loss"``, ``"grad"`` (an :class:`~mdc_jax.RNNParams` equal to ``jax.grad`` of
      :func:`mdc_jax.rnn_loss`) and each requested quantity (per-parameter ones as ``RNNParams``).

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4 (final equations); Bu et al. 2023 (mixed ghost norm); Gruslys et al. 2016.
    """
    fn = "rnn_quantities"
    quantities = v.require_names(fn, "quantities", quantities, QUANTITIES, "quantity")
    params, Z0, X, Y, fused, k = _prepare(fn, params, Z0, X, Y, head, block_size, ignore_index, head_options,
                                          checkpoint_every)
    materialise = {"batch_grad", "sum_grad_squared", "variance"} & set(quantities)
    if fused is not None and materialise:
        v.fail(fn, f"quantities {sorted(materialise)} materialise N copies of V (N × H × K) and the head's errors; "
                   f"with head='fused' ask for batch_l2 and grad_norm (or use head='plain').")
    N = X.shape[1]
    if k is not None:
        ell, bg = _segment_batch_grads(params, Z0, X, Y, k)
        grad = rnn.RNNParams(*(v.cast_like(jnp.mean(g, axis=0), p) for g, p in zip(bg, params)))
        return _statistics(bg, quantities, {"loss": jnp.mean(ell), "grad": grad})
    rows = _per_step(params, Z0, X, Y, fused)
    out = {"loss": jnp.mean(rows.ell), "grad": _grads(params, X, Y, rows, jnp.ones((N,), rows.S.dtype), fused)}
    if materialise:
        return _statistics(_materialised(params, X, rows), quantities, out)
    if "batch_l2" in quantities or "grad_norm" in quantities:
        sq = _sq_norms(params, X, Y, rows)
        if "batch_l2" in quantities:
            out["batch_l2"] = sq
        if "grad_norm" in quantities:
            out["grad_norm"] = jnp.sqrt(sum(sq))
    return out


def _grads(params, X, Y, rows, c, fused):
    """``(1/N) Σ_i c_i g_i`` as an ``RNNParams`` in the parameters' dtypes."""
    N = X.shape[1]
    dW, dU, db, dV, dc = _weighted_grads(params, X, rows, c, N)
    if fused is not None:
        dV, dc = fused_head.weighted_head_grads(params, rows, Y, c / N, fused)
    return rnn.RNNParams(*(v.cast_like(d, p) for d, p in zip((dW, dU, db, dV, dc), params)))


def rnn_clipped_grad(params, Z0, X, Y, *, clip_norm, weights=None, head: str = "plain", block_size=None,
                     ignore_index: int | None = None, head_options=None, checkpoint_every: int | None = None):
    """``(J, (1/N) Σ_i w_i min(1, C/‖g_i‖) g_i)`` for the §6.4 RNN, from one closed-form backward.

    ``‖g_i‖`` is the norm over all five parameters, from the mixed ghost norm (see :func:`rnn_quantities`);
    the clipped mean is ``Σ_t Z_{t−1}ᵀ diag(c) ∇_{A_t}`` (and likewise for ``U``, ``b``, ``V``, ``c``): the plain
    gradient's contractions with rescaled rows. With ``checkpoint_every`` the ``g_i`` are materialised segment by
    segment and the clipped mean is ``Σ_i c_i g_i / N``.

    Args:
      params, Z0, X, Y, head, block_size, ignore_index, head_options, checkpoint_every: as in
        :func:`rnn_quantities` (token ids and integer labels included).
      clip_norm: ``C > 0`` (keyword-only, required).
      weights: optional ``(N,)`` per-sequence weights ``w_i ≥ 0``, as in
        :func:`mdc_jax.per_example.fcnn_clipped_grad`.

    Returns:
      ``(loss, grads)`` with ``loss = (1/N) Σ_i w_i ℓ_i`` and ``grads`` an :class:`~mdc_jax.RNNParams`.
    """
    fn = "rnn_clipped_grad"
    params, Z0, X, Y, fused, k = _prepare(fn, params, Z0, X, Y, head, block_size, ignore_index, head_options,
                                          checkpoint_every)
    N = X.shape[1]
    w = check_clipping(fn, clip_norm, weights, N, Z0.dtype)
    if k is not None:
        ell, bg = _segment_batch_grads(params, Z0, X, Y, k)
        c = clip_factors(sum(jnp.sum(jnp.square(g).reshape(N, -1), axis=1) for g in bg), clip_norm)
        c, ell = (c, ell) if w is None else (c * w, ell * w)
        return jnp.mean(ell), rnn.RNNParams(*(v.cast_like(jnp.tensordot(c, g, axes=1) / N, p) for g, p in zip(bg, params)))
    rows = _per_step(params, Z0, X, Y, fused)
    c = clip_factors(sum(_sq_norms(params, X, Y, rows)), clip_norm)
    ell = rows.ell
    if w is not None:
        c, ell = c * w, ell * w
    return jnp.mean(ell), _grads(params, X, Y, rows, c, fused)
