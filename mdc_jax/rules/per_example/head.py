"""The fused head's per-example quantities for the RNN, in its own blocks (seed 000 §6.3.1, §6.4).

For sequence ``i`` the head's gradients are ``g_i(V) = Σ_t z_t h_tᵀ`` and ``g_i(c) = Σ_t h_t`` with
``h_t = ∂ℓ_t/∂o_t`` over the whole vocabulary, so

    ‖g_i(V)‖² = ⟨Z_i Z_iᵀ, H_i H_iᵀ⟩,   ‖g_i(c)‖² = 1ᵀ H_i H_iᵀ 1,   (H_i H_iᵀ)_{tt'} = Σ_k h_tk h_t'k.

The ``τ × τ`` Gram ``H_i H_iᵀ`` is a sum over the vocabulary, accumulated block by block: the token blocks
here are blocks of whole sequences (``n_b·τ`` rows, sequence by sequence), so each block of errors
``E_{IJ}`` (:func:`mdc_jax.rules.linear_ce.block_error`, the head's one formula) adds
``E_{IJ}E_{IJ}ᵀ`` restricted to each sequence's own rows. The same pass gives ``∇_{Z_t}ℓ_i = h_t Vᵀ`` for
the §6.4 recursion. After clipping, ``(1/N) Σ_i c_i g_i(V)`` is one more pass with the per-token cotangent
``c_i/N``. No ``τ·N × K`` array exists: the largest is one block of logits, as in the fused head.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ...kernels import block_starts, fresh_mask
from .. import linear_ce, rnn


class Fused(NamedTuple):
    """The fused head's static description: sequences per token block, vocabulary block, options."""

    nb: int
    bk: int
    opts: linear_ce.HeadOptions


def describe(X, params, options) -> Fused:
    """:class:`Fused` from the rule's checked :class:`~mdc_jax.rules.rnn.RuleOptions` (its token block over the
    ``τN`` states, vocabulary block, head options). The blocks keep the head's budget of ``bn·bk`` logits but
    hold whole sequences: where a sequence's ``τ × K`` logits fit, a block is as many sequences as fit, over
    the whole vocabulary (its logits are formed once, for the log-sum-exp and the errors); else
    ``max(1, bn // τ)`` sequences in vocabulary blocks of ``bk`` (formed twice: the online log-sum-exp first)."""
    tau, N, K = X.shape[0], X.shape[1], params.V.shape[1]
    bn, bk = options.blocks
    if tau * K <= bn * bk:
        return Fused(min(N, bn * bk // (tau * K)), K, options.head_options)
    return Fused(min(N, max(1, bn // tau)), bk, options.head_options)


def _targets(Y, n0, nb, K):
    """The targets of sequences ``n0..n0+nb`` as the head's rows, sequence by sequence (``nb·τ`` rows)."""
    Y_I = jnp.swapaxes(jax.lax.dynamic_slice_in_dim(Y, n0, nb, axis=1), 0, 1)
    return linear_ce.as_targets(Y_I, K)


def _states(Zs, Z_tau, n0, nb):
    """``Z_1..Z_τ`` of sequences ``n0..n0+nb`` as ``(nb·τ, H)`` rows, sequence by sequence (a block's copy), so
    that a block of errors reshaped ``(nb, τ, ·)`` holds one sequence per leading index."""
    Z_in = jax.lax.dynamic_slice_in_dim(Zs, n0, nb, axis=1)
    Z_out = rnn.states_out(Z_in, jax.lax.dynamic_slice_in_dim(Z_tau, n0, nb))
    return jnp.swapaxes(Z_out, 0, 1).reshape(-1, Z_tau.shape[-1])


def _vocab_scan(body, init, K, bk):
    starts = block_starts(K, bk)
    return jax.lax.scan(body, init, (jnp.arange(len(starts), dtype=jnp.int32), starts))[0]


def head_rows(params, Zs, Z_tau, Y, fused: Fused):
    """``(ℓ (N,), ∇_{Z_t}ℓ_i through V (τ, N, H), (lse (N, τ), [h_t·h_t'] (N, τ, τ)))`` from the states
    ``Zs`` ``(τ/k, k, N, H)`` and ``Z_τ``; labels ``Y`` ``(τ, N)`` (or rows ``(τ, N, K)``)."""
    V, c = params.V, params.c
    nb, bk, opts = fused
    N, H, K = Z_tau.shape[0], Z_tau.shape[1], V.shape[1]
    Zs = Zs.reshape(-1, N, H)
    tau = Zs.shape[0]
    acc = linear_ce.acc_dtype(Z_tau.dtype)

    def block(carry, xs):
        ell, HV, lse_all, Kh = carry
        i, n0 = xs
        Z_I = _states(Zs, Z_tau, n0, nb)
        T_I, soft = _targets(Y, n0, nb, K)
        ysum = linear_ce.row_sums(T_I, soft, K, acc, opts)
        ones = jnp.ones((tau * nb,), acc)

        def vocab(carry, ys):  # a block of the vocabulary: its errors' h Vᵀ and H_iH_iᵀ
            dZ, G = carry
            j, k0 = ys
            A, V_J = linear_ce.block_logits(Z_I, V, c, k0, bk, acc, opts)
            Y_IJ = linear_ce.targets_block(T_I, soft, k0, bk, acc, opts, K, ysum)
            E = jnp.where(fresh_mask(k0, j, bk)[None, :], linear_ce.block_error(A, lse, Y_IJ, ysum, opts, ones), 0)
            Eb = E.reshape(nb, tau, -1)
            return (dZ + jnp.dot(E, V_J.T.astype(acc)), G + jnp.einsum("ntk,nsk->nts", Eb, Eb)), None

        if bk == K:  # whole rows: the block's logits formed once, for the log-sum-exp and the errors
            A, _ = linear_ce.block_logits(Z_I, V, c, 0, K, acc, opts)
            Y_IJ = linear_ce.targets_block(T_I, soft, 0, K, acc, opts, K, ysum)
            lse = jax.nn.logsumexp(A, axis=1)
            loss = ysum * linear_ce.lse_loss(lse, opts) - jnp.sum(Y_IJ * A, axis=1)  # as linear_ce.forward's
            E = linear_ce.block_error(A, lse, Y_IJ, ysum, opts, ones)
            Eb = E.reshape(nb, tau, K)
            dZ, G = jnp.dot(E, V.T.astype(acc)), jnp.einsum("ntk,nsk->nts", Eb, Eb)
        else:
            lse, loss = linear_ce.forward(Z_I, V, c, T_I, soft, tau * nb, bk, acc, opts)
            dZ, G = _vocab_scan(vocab, (jnp.zeros((tau * nb, H), acc), jnp.zeros((nb, tau, tau), acc)), K, bk)
        new = fresh_mask(n0, i, nb)  # the sequences no earlier block covered
        put = lambda old, x, axis: jax.lax.dynamic_update_slice_in_dim(
            old, jnp.where(new.reshape([-1 if a == axis else 1 for a in range(x.ndim)]), x,
                           jax.lax.dynamic_slice_in_dim(old, n0, nb, axis)), n0, axis)
        return (put(ell, jnp.sum(loss.reshape(nb, tau), axis=1).astype(ell.dtype), 0),
                put(HV, jnp.swapaxes(dZ.reshape(nb, tau, H), 0, 1).astype(HV.dtype), 1),
                put(lse_all, lse.reshape(nb, tau), 0), put(Kh, G, 0)), None

    starts = block_starts(N, nb)
    init = (jnp.zeros((N,), Z_tau.dtype), jnp.zeros((tau, N, H), Z_tau.dtype), jnp.zeros((N, tau), acc),
            jnp.zeros((N, tau, tau), acc))
    (ell, HV, lse, Kh), _ = jax.lax.scan(block, init, (jnp.arange(len(starts), dtype=jnp.int32), starts))
    return ell, HV, (lse, Kh)


def weighted_head_grads(params, rows, Y, cN, fused: Fused):
    """``(1/N) Σ_i c_i (g_i(V), g_i(c))``: the fused backward's ``∇V``, ``∇c`` with the per-token cotangent
    ``c_i/N`` (``cN``, ``(N,)``), the errors recomputed block by block from the saved ``lse``."""
    V, c = params.V, params.c
    nb, bk, opts = fused
    Z_tau = rows.Z_tau
    N, H, K = Z_tau.shape[0], Z_tau.shape[1], V.shape[1]
    Zs = rows.Zs.reshape(-1, N, H)
    tau = Zs.shape[0]
    lse_all = rows.fused[0]
    acc = lse_all.dtype
    cN = cN.astype(acc)

    def block(carry, xs):
        dV, dc = carry
        i, n0 = xs
        Z_I = _states(Zs, Z_tau, n0, nb)
        T_I, soft = _targets(Y, n0, nb, K)
        lse = jax.lax.dynamic_slice_in_dim(lse_all, n0, nb).reshape(-1)
        g = jnp.repeat(jnp.where(fresh_mask(n0, i, nb), jax.lax.dynamic_slice_in_dim(cN, n0, nb), 0), tau)
        ysum = linear_ce.row_sums(T_I, soft, K, acc, opts)

        def vocab(carry, ys):
            dV, dc = carry
            j, k0 = ys
            A, _ = linear_ce.block_logits(Z_I, V, c, k0, bk, acc, opts)
            Y_IJ = linear_ce.targets_block(T_I, soft, k0, bk, acc, opts, K, ysum)
            E = jnp.where(fresh_mask(k0, j, bk)[None, :], linear_ce.block_error(A, lse, Y_IJ, ysum, opts, g), 0)
            dV_J = jax.lax.dynamic_slice_in_dim(dV, k0, bk, axis=1) + jnp.dot(Z_I.T.astype(acc), E)
            dc_J = jax.lax.dynamic_slice_in_dim(dc, k0, bk) + jnp.sum(E, axis=0)
            return (jax.lax.dynamic_update_slice_in_dim(dV, dV_J, k0, 1),
                    jax.lax.dynamic_update_slice_in_dim(dc, dc_J, k0, 0)), None

        return _vocab_scan(vocab, (dV, dc), K, bk), None

    starts = block_starts(N, nb)
    (dV, dc), _ = jax.lax.scan(block, (jnp.zeros(V.shape, acc), jnp.zeros(c.shape, acc)),
                               (jnp.arange(len(starts), dtype=jnp.int32), starts))
    return dV, dc
