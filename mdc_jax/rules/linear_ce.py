"""A fused linear + softmax cross-entropy head that never holds the logits (seed 000 §6.3.1, blocked).

Seed: ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44): for ``J = −(1/N) ln(s¹(A))·Y`` the gradient
with respect to the logits is ``E = (s¹(A) − Y)/N`` (keeping ``1ᵀy_i``: ``(s¹(A) ⊙ (Y1)1ᵀ − Y)/N``).
Here ``A = Z W + 1bᵀ`` (``Z``: N × d, ``W``: d × K), so by §6.2's final equations

    ∇_Z J = E Wᵀ,   ∇_W J = Zᵀ E,   ∇_b J = Eᵀ 1.

Every entry of ``E`` needs only its own logit and its row's log-sum-exp ``lse_i`` (``s_ik =
exp(a_ik − lse_i)``), so ``E`` can be formed block by block:

* **forward**: for each block of tokens, an online log-sum-exp over blocks of the vocabulary (running
  max and rescaled sum) and the label's logit; only ``lse`` (N floats) is kept for the backward;
* **backward**: each block of logits ``A_{IJ} = Z_I W_J + 1 b_Jᵀ`` is recomputed, turned into
  ``E_{IJ} = g_I ⊙ (exp(A_{IJ} − lse_I) (Y_I 1) − Y_{IJ})`` (``g``: the per-token cotangent) and applied at
  once: ``∇Z_I += E_{IJ} W_Jᵀ``, ``∇W_J += Z_Iᵀ E_{IJ}``, ``∇b_J += E_{IJ}ᵀ1``.

So the N × K logits and their gradient never exist at once: the largest buffer is one block. The
cotangent-dependent work happens in the backward, so a non-uniform per-token cotangent
(``reduction="none"``) is honoured. Samples are rows, as everywhere in mdc-jax.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from ..kernels import block_starts, fresh_mask
from .softmax import cross_entropy_error

REDUCTIONS = ("mean", "sum", "none")
HEADS = ("plain", "fused")  # the output layers a softmax rule offers: logits held whole, or this module's blocks
BLOCK_ELEMENTS = 2**22  # logits per block (16 MiB in float32): the default block's budget
VOCAB_BLOCK = 8192  # the default vocabulary block


def default_blocks(N: int, K: int) -> tuple[int, int]:
    """(token block, vocabulary block): the vocabulary in blocks of up to 8192 columns, tokens in blocks
    keeping a block of logits within ``BLOCK_ELEMENTS``."""
    bk = min(K, VOCAB_BLOCK)
    bn = min(N, max(1, BLOCK_ELEMENTS // bk))
    return bn, bk


def acc_dtype(dtype) -> jnp.dtype:
    """float32 accumulation for float32 and narrower inputs (bfloat16), float64 for float64 ones."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


def _block_logits(Z_I, W, b, start, bk, acc):
    W_J = jax.lax.dynamic_slice_in_dim(W, start, bk, axis=1)
    b_J = jax.lax.dynamic_slice_in_dim(b, start, bk)
    A = jnp.dot(Z_I, W_J, preferred_element_type=acc) + b_J.astype(acc)[None, :]
    return A, W_J


def _row_sums(T_I, soft, K, acc):
    """``Y1`` for the block's rows: the soft rows' sums, or 1 for a label in ``[0, K)`` and 0 for any other
    (an ignored token's −1, or an out-of-range label under ``jit``: a zero row, as its one-hot would be)."""
    if soft:
        return jnp.sum(T_I.astype(acc), axis=1)
    return ((T_I >= 0) & (T_I < K)).astype(acc)


def _targets_block(targets, soft, start, bk, acc):
    """The block's rows of Y: a slice of soft labels, or the one-hot of integer labels in the block."""
    if soft:
        return jax.lax.dynamic_slice_in_dim(targets, start, bk, axis=1).astype(acc)
    cols = start + jnp.arange(bk, dtype=jnp.int32)
    return (targets[:, None] == cols[None, :]).astype(acc)


def forward(Z, W, b, targets, soft, bn, bk, acc):
    """Per-token ``lse`` and loss ``ℓ_i = (Y1)_i lse_i − Σ_k y_ik a_ik``, both (N,) in ``acc``."""
    N, K = Z.shape[0], W.shape[1]
    vstarts, tstarts = block_starts(K, bk), block_starts(N, bn)

    def token_block(carry, xs):
        lse_all, loss_all = carry
        _, t0 = xs
        Z_I = jax.lax.dynamic_slice_in_dim(Z, t0, bn)
        T_I = jax.lax.dynamic_slice_in_dim(targets, t0, bn)

        def vocab_block(c, ys):
            m, s, ya = c
            j, k0 = ys
            A, _ = _block_logits(Z_I, W, b, k0, bk, acc)
            fresh = fresh_mask(k0, j, bk)  # columns no earlier block covered
            A = jnp.where(fresh[None, :], A, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(A, axis=1))
            s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(A - m_new[:, None]), axis=1)
            Y = jnp.where(fresh[None, :], _targets_block(T_I, soft, k0, bk, acc), 0)
            return (m_new, s, ya + jnp.sum(Y * jnp.where(fresh[None, :], A, 0.0), axis=1)), None

        init = (jnp.full((bn,), -jnp.inf, acc), jnp.zeros((bn,), acc), jnp.zeros((bn,), acc))
        (m, s, ya), _ = jax.lax.scan(vocab_block, init, (jnp.arange(len(vstarts), dtype=jnp.int32), vstarts))
        lse = m + jnp.log(s)
        ysum = _row_sums(T_I, soft, K, acc)
        return (jax.lax.dynamic_update_slice_in_dim(lse_all, lse, t0, 0),
                jax.lax.dynamic_update_slice_in_dim(loss_all, ysum * lse - ya, t0, 0)), None

    init = (jnp.zeros((N,), acc), jnp.zeros((N,), acc))
    (lse, loss), _ = jax.lax.scan(token_block, init, (jnp.arange(len(tstarts), dtype=jnp.int32), tstarts))
    return lse, loss


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _head(Z, W, b, targets, soft, bn, bk, acc):
    return forward(Z, W, b, targets, soft, bn, bk, acc)[1]


def _head_fwd(Z, W, b, targets, soft, bn, bk, acc):
    lse, loss = forward(Z, W, b, targets, soft, bn, bk, acc)
    return loss, (Z, W, b, targets, lse)  # N floats beyond the inputs: the logits are not kept


def backward(soft, bn, bk, acc, res, g):
    """∇Z, ∇W, ∇b and ∇targets (float0 for integer labels) for per-token cotangents ``g`` (N,)."""
    Z, W, b, targets, lse = res
    N, K = Z.shape[0], W.shape[1]
    vstarts, tstarts = block_starts(K, bk), block_starts(N, bn)
    g = g.astype(acc)

    def token_block(carry, xs):
        dZ, dW, db, dT = carry
        i, t0 = xs
        Z_I = jax.lax.dynamic_slice_in_dim(Z, t0, bn)
        T_I = jax.lax.dynamic_slice_in_dim(targets, t0, bn)
        fresh_rows = fresh_mask(t0, i, bn)
        g_I = jnp.where(fresh_rows, jax.lax.dynamic_slice_in_dim(g, t0, bn), 0)
        lse_I = jax.lax.dynamic_slice_in_dim(lse, t0, bn)
        ysum = _row_sums(T_I, soft, K, acc)[:, None]

        def vocab_block(c, ys):
            dZ_I, dW, db, dT_I = c
            j, k0 = ys
            A, W_J = _block_logits(Z_I, W, b, k0, bk, acc)
            fresh = fresh_mask(k0, j, bk)
            P = jnp.exp(A - lse_I[:, None])
            E = jnp.where(fresh[None, :], g_I[:, None], 0) * cross_entropy_error(P, _targets_block(T_I, soft, k0, bk, acc), ysum)
            dZ_I = dZ_I + jnp.dot(E, W_J.T.astype(acc))
            dW_J = jax.lax.dynamic_slice_in_dim(dW, k0, bk, axis=1) + jnp.dot(Z_I.T.astype(acc), E)
            db_J = jax.lax.dynamic_slice_in_dim(db, k0, bk) + jnp.sum(E, axis=0)
            if soft:  # ∂ℓ_i/∂y_ik = lse_i − a_ik
                old = jax.lax.dynamic_slice_in_dim(dT_I, k0, bk, axis=1)
                new = jnp.where(fresh[None, :], g_I[:, None] * (lse_I[:, None] - A), old)
                dT_I = jax.lax.dynamic_update_slice_in_dim(dT_I, new, k0, 1)
            return (dZ_I, jax.lax.dynamic_update_slice_in_dim(dW, dW_J, k0, 1),
                    jax.lax.dynamic_update_slice_in_dim(db, db_J, k0, 0), dT_I), None

        dT_I = jax.lax.dynamic_slice_in_dim(dT, t0, bn) if soft else dT
        init = (jnp.zeros((bn, Z.shape[1]), acc), dW, db, dT_I)
        (dZ_I, dW, db, dT_I), _ = jax.lax.scan(vocab_block, init, (jnp.arange(len(vstarts), dtype=jnp.int32), vstarts))
        old = jax.lax.dynamic_slice_in_dim(dZ, t0, bn)
        dZ = jax.lax.dynamic_update_slice_in_dim(dZ, jnp.where(fresh_rows[:, None], dZ_I, old), t0, 0)
        if soft:
            oldT = jax.lax.dynamic_slice_in_dim(dT, t0, bn)
            dT = jax.lax.dynamic_update_slice_in_dim(dT, jnp.where(fresh_rows[:, None], dT_I, oldT), t0, 0)
        return (dZ, dW, db, dT), None

    dT0 = jnp.zeros(targets.shape, acc) if soft else jnp.zeros((), acc)
    init = (jnp.zeros(Z.shape, acc), jnp.zeros(W.shape, acc), jnp.zeros(b.shape, acc), dT0)
    (dZ, dW, db, dT), _ = jax.lax.scan(token_block, init, (jnp.arange(len(tstarts), dtype=jnp.int32), tstarts))
    d_targets = dT.astype(targets.dtype) if soft else np.zeros(targets.shape, jax.dtypes.float0)
    return dZ.astype(Z.dtype), dW.astype(W.dtype), db.astype(b.dtype), d_targets


_head.defvjp(_head_fwd, backward)


def as_targets(Y, K: int):
    """``(targets, soft)`` for the blocked head from a model's labels: rows of probabilities ``(..., K)``
    flattened to ``(M, K)``, or integer labels ``(...)`` flattened to ``(M,)`` int32, a label outside
    ``[0, K)`` (of any width: an int64 ``2**32 + 1`` too) becoming ``-1``, the zero row, before the cast."""
    soft = not jnp.issubdtype(Y.dtype, jnp.integer)
    return (Y.reshape(-1, Y.shape[-1]) if soft else _int32_labels(Y.reshape(-1), K)), soft


def _int32_labels(labels, K: int, keep=True):
    """Integer labels as int32 for the blocks' compares, ``-1`` (no column: a zero target row) where a label
    lies outside ``[0, K)`` or ``keep`` is false. The range is tested in the labels' own width, before the
    narrowing cast, so that no wide label wraps into ``[0, K)``."""
    return jnp.where(keep & (labels >= 0) & (labels < K), labels, -1).astype(jnp.int32)


def check_head(fn, head, block_size) -> bool:
    """Whether ``head`` is ``"fused"``: the name is one of :data:`HEADS`, and ``block_size`` goes with the fused
    head only. The blocks themselves, once the sizes are known: :func:`resolve_blocks`."""
    v.require_choice(fn, "head", head, HEADS)
    if head == "plain" and block_size is not None:
        v.fail(fn, f"block_size applies to head='fused' only; got block_size={block_size!r} with head='plain'.")
    return head == "fused"


def resolve_blocks(fn, block_size, N, K):
    """(token block, vocabulary block) from a ``block_size`` argument, each at most its total."""
    if block_size is None:
        return default_blocks(N, K)
    sizes = block_size if isinstance(block_size, tuple | list) else (None, block_size)
    if len(sizes) != 2:
        v.fail(fn, f"block_size must be an int (vocabulary block) or a pair (token block, vocabulary block); "
                   f"got {block_size!r}.")
    out = []
    for name, size, total in zip(("token block", "vocabulary block"), sizes, (N, K)):
        if size is None:
            out.append(default_blocks(N, K)[name == "vocabulary block"])
            continue
        size = v.require_static_int(fn, f"block_size: the {name}", size, what="a positive int",
                                    static_why=", as it fixes the blocks' shapes")
        out.append(min(size, total))
    return tuple(out)


def linear_softmax_cross_entropy(Z, W, b, labels, *, reduction: str = "mean", ignore_index: int | None = None,
                                 block_size=None):
    """Softmax cross-entropy of the logits ``Z W + 1bᵀ`` without ever holding them (§6.3.1, blocked).

    .. math::

       \\ell_i = \\operatorname{lse}(a_i) - a_{i,y_i},\\qquad a_i = W^T z_i + b,\\qquad
       \\nabla_{A}J = E = \\frac1N\\big(s^1(A) - Y\\big),\\quad \\nabla_Z J = EW^T,\\;
       \\nabla_W J = Z^TE,\\; \\nabla_b J = E^T\\mathbf 1.

    The forward keeps only the per-row log-sum-exp; the backward recomputes each block of logits and
    applies the closed form to it (see the module docstring). Logits and their gradient are formed in
    float32 whatever the input dtype (bfloat16 inputs accumulate in float32); gradients are returned
    in the inputs' dtypes.

    Args:
      Z: ``(N, d)`` features (token states), rows are samples.
      W: ``(d, K)`` output projection; ``b``: ``(K,)`` bias.
      labels: ``(N,)`` integer class indices in ``[0, K)`` (or ``ignore_index``), or ``(N, K)`` soft
        labels (rows of probabilities, floating). Concrete labels are range-checked; under ``jit`` a
        label outside ``[0, K)`` is the zero row its one-hot would be (it adds nothing to the sum).
      reduction: ``"mean"`` over the tokens that are not ignored (0 when all are), ``"sum"``, or
        ``"none"`` for the ``(N,)`` per-token losses (a per-token cotangent is honoured exactly).
      ignore_index: an integer label whose tokens contribute nothing (loss and gradient 0) and are
        left out of the mean; integer labels only.
      block_size: ``None`` (automatic: vocabulary blocks of up to 8192 columns, token blocks keeping a
        block within 2²² logits), an int (the vocabulary block), or ``(token block, vocabulary block)``.
        Blocks need not divide N or K.

    Returns:
      The loss (a scalar, or ``(N,)`` for ``reduction="none"``), in float32 (float64 for float64 inputs).

    Raises:
      ValueError: naming the argument, for shape mismatches, labels out of range (concrete labels),
        float labels of shape ``(N,)``, an unknown reduction or a non-positive block size.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44), §6.2 (final equations); Cut Cross-Entropy
      (Wijmans et al. 2024) and Liger Kernel for the blocked form.
    """
    fn = "linear_softmax_cross_entropy"
    v.require_choice(fn, "reduction", reduction, REDUCTIONS)
    N, d = v.require_matrix(fn, "Z", Z, "(N, d)")
    v.require_samples(fn, "Z", (N, d))
    W_shape = v.require_matrix(fn, "W", W, "(d, K)", rows=d, why=f"its rows must equal Z's columns, d = {d}")
    K = v.require_classes(fn, "W", W_shape)
    v.require_floating(fn, "b", b)
    v.require_shape(fn, "b", b, (K,), f"one bias per column of W, K = {K}")
    if ignore_index is not None:
        ignore_index = v.require_static_int(fn, "ignore_index", ignore_index, minimum=None, what="an int or None",
                                            static_why=": it selects the tokens left out of the mean")
    soft = not v.require_labels(fn, "labels", labels, (N,), K, dims="(N, K)", why=f"soft labels: Z's {N} rows, W's {K} columns",
                                integer="one class index per row of Z; soft labels are floating (N, K) rows",
                                ignore=ignore_index)
    if soft and ignore_index is not None:
        v.fail(fn, "ignore_index applies to integer labels only; give soft-label rows of zeros instead.")
    bn, bk = resolve_blocks(fn, block_size, N, K)
    out_dtype = acc_dtype(jnp.result_type(Z, W, b))
    if soft:
        valid = jnp.ones((N,), bool)
        targets = labels
    else:
        valid = labels != ignore_index if ignore_index is not None else jnp.ones((N,), bool)
        targets = _int32_labels(labels, K, valid)  # -1 matches no column: a zero target row
    losses = jnp.where(valid, _head(Z, W, b, targets, soft, bn, bk, out_dtype), 0.0).astype(out_dtype)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return jnp.sum(losses)
    count = jnp.sum(valid).astype(out_dtype)
    return jnp.sum(losses) / jnp.maximum(count, 1)

