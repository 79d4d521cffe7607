"""A fused linear + softmax cross-entropy head that never holds the logits (seed 000 §6.3.1, blocked).

Seed: ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44): for ``J = −(1/N) ln(s¹(A))·Y`` the gradient
with respect to the logits is ``E = (s¹(A) − Y)/N`` (keeping ``1ᵀy_i``: ``(s¹(A) ⊙ (Y1)1ᵀ − Y)/N``).
Here ``A = Z W + 1bᵀ`` (``Z``: N × d, ``W``: d × K), so by §6.2's final equations

    ∇_Z J = E Wᵀ,   ∇_W J = Zᵀ E,   ∇_b J = Eᵀ 1.

Every entry of ``E`` needs only its own logit and its row's log-sum-exp ``lse_i`` (``s_ik =
exp(a_ik − lse_i)``), so ``E`` can be formed block by block:

* **forward**: for each block of tokens, an online log-sum-exp over blocks of the vocabulary (running
  max and rescaled sum) and the targets' logits; only ``lse`` (N floats) is kept for the backward;
* **backward**: each block of logits ``A_{IJ} = Z_I W_J + 1 b_Jᵀ`` is recomputed, turned into its
  error ``E_{IJ}`` (:func:`block_error`, with the per-token cotangent ``g``) and applied at once:
  ``∇Z_I += E_{IJ} W_Jᵀ``, ``∇W_J += Z_Iᵀ E_{IJ}``, ``∇b_J += E_{IJ}ᵀ1``.

The options (:class:`HeadOptions`, as Cut Cross-Entropy and Liger define them) change only the entries:
a softcap ``c`` replaces each logit by ``a = c·tanh(r/c)`` (``r``: the raw logit, after the bias);
label smoothing ``α`` the targets by ``y' = (1 − α) y + α (1ᵀy)/K``; a z-loss ``z`` adds ``z·lse²``. Then

    ℓ_i = (1ᵀy_i)(1 + z·lse_i) lse_i − y'_i·a_i,
    E_ik = [g_i ((1ᵀy_i)(1 + 2z·lse_i) s_ik − y'_ik) + g^lse_i s_ik] (1 − (a_ik/c)²),

``g^lse`` the cotangent of the returned ``lse`` (``return_lse=True``). So the N × K logits and their
gradient never exist at once: the largest buffer is one block. The cotangent-dependent work happens in
the backward, so a non-uniform per-token cotangent (``reduction="none"``) is honoured. Samples are rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

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


class HeadOptions(NamedTuple):
    """The fused head's options, static (they fix the blocks' arithmetic) and hashable.

    Attributes:
      z_loss: ``z >= 0``, the coefficient of the per-token ``z·lse²`` (part of the loss).
      label_smoothing: ``α`` in ``[0, 1)``: targets ``(1 − α) y + α (1ᵀy)/K`` (optax's ``smooth_labels`` for
        rows of probabilities; an ignored token's zero row stays zero).
      softcap: ``c > 0``, logits ``c·tanh(a/c)`` after the bias; ``None``: no cap.
    """

    z_loss: float = 0.0
    label_smoothing: float = 0.0
    softcap: float | None = None


NO_OPTIONS = HeadOptions()  # the plain head's: no z-loss, no smoothing, no cap


def head_options(fn: str, options, name: str | None = "head_options") -> HeadOptions:
    """:class:`HeadOptions` from ``None``, a ``HeadOptions`` or a mapping with keys from its fields, checked:
    ``z_loss >= 0``, ``label_smoothing`` in ``[0, 1)``, ``softcap`` ``None`` or ``> 0``, all static numbers.
    Errors name ``fn``, the key (``name['z_loss']``; the bare key where ``name`` is ``None``, for a function's
    own keyword arguments) and the value."""
    if options is None:
        return NO_OPTIONS
    if isinstance(options, HeadOptions):
        options = options._asdict()
    elif not isinstance(options, Mapping):
        v.fail(fn, f"{name} must be None, a HeadOptions or a mapping with keys from {HeadOptions._fields}; "
                   f"got {options!r}.")
    unknown = [key for key in options if key not in HeadOptions._fields]
    if unknown:
        v.fail(fn, f"{name} has unknown key(s) {unknown}; expected keys from {HeadOptions._fields}.")
    label = (lambda key: key) if name is None else (lambda key: f"{name}[{key!r}]")
    z = v.require_number(fn, label("z_loss"), options.get("z_loss", 0.0))
    raw = options.get("label_smoothing", 0.0)
    alpha = v.as_number(raw)
    if alpha is None or not 0 <= alpha < 1:
        v.fail(fn, f"{label('label_smoothing')} must be a number in [0, 1); got {raw!r}.")
    raw = options.get("softcap")
    cap = None if raw is None else v.as_number(raw)
    if raw is not None and (cap is None or not 0 < cap < float("inf")):
        v.fail(fn, f"{label('softcap')} must be None or a finite number > 0; got {raw!r}.")
    return HeadOptions(z, alpha, cap)


def default_blocks(N: int, K: int) -> tuple[int, int]:
    """(token block, vocabulary block): the vocabulary in blocks of up to 8192 columns, tokens in blocks
    keeping a block of logits within ``BLOCK_ELEMENTS``."""
    bk = min(K, VOCAB_BLOCK)
    bn = min(N, max(1, BLOCK_ELEMENTS // bk))
    return bn, bk


def acc_dtype(dtype) -> jnp.dtype:
    """float32 accumulation for float32 and narrower inputs (bfloat16), float64 for float64 ones."""
    return jnp.dtype(jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32)


# --- one block: its logits, its targets, its error ------------------------------------------


def block_logits(Z_I, W, b, start, bk, acc, opts=NO_OPTIONS):
    """The block's logits ``A = Z_I W_J + 1 b_Jᵀ`` (``bk`` columns from ``start``), capped to ``c·tanh(A/c)``
    under a softcap, in ``acc``; and ``W_J``."""
    W_J = jax.lax.dynamic_slice_in_dim(W, start, bk, axis=1)
    b_J = jax.lax.dynamic_slice_in_dim(b, start, bk)
    A = jnp.dot(Z_I, W_J, preferred_element_type=acc) + b_J.astype(acc)[None, :]
    if opts.softcap is not None:
        A = opts.softcap * jnp.tanh(A / opts.softcap)
    return A, W_J


def row_sums(T_I, soft, K, acc, opts=None):
    """``Y1`` for the block's rows: the soft rows' sums, or 1 for a label in ``[0, K)`` and 0 for any other
    (an ignored token's −1, or an out-of-range label under ``jit``: a zero row, as its one-hot would be).
    Label smoothing keeps them (``Y'1 = Y1``), so ``opts`` does not enter."""
    del opts
    if soft:
        return jnp.sum(T_I.astype(acc), axis=1)
    return ((T_I >= 0) & (T_I < K)).astype(acc)


def targets_block(T_I, soft, start, bk, acc, opts, K, ysum=None):
    """The block's target rows: a slice of soft labels, or the one-hot of integer labels in the block;
    smoothed to ``(1 − α) Y + α (Y1)/K`` (``ysum``: :func:`row_sums`, computed when not given)."""
    if soft:
        Y = jax.lax.dynamic_slice_in_dim(T_I, start, bk, axis=1).astype(acc)
    else:
        cols = start + jnp.arange(bk, dtype=jnp.int32)
        Y = (T_I[:, None] == cols[None, :]).astype(acc)
    alpha = opts.label_smoothing
    if not alpha:
        return Y
    ysum = row_sums(T_I, soft, K, acc) if ysum is None else ysum
    return (1 - alpha) * Y + (alpha / K) * ysum[:, None]


def lse_loss(lse, opts):
    """The per-token loss's ``lse`` part for a unit row, ``(1 + z·lse) lse``: ``ℓ_i = (1ᵀy_i) lse_loss − y'_i·a_i``."""
    return lse + opts.z_loss * lse * lse if opts.z_loss else lse


def block_error(A, lse_I, Y_IJ, ysum, opts, g_I, g_lse_I=None):
    """``E = ∂(Σ_i g_i ℓ_i + g^lse_i lse_i)/∂R`` for the block (``R``: the raw logits, before a softcap):

        E = [g ⊙ ((Y1) ⊙ (1 + 2z·lse) ⊙ S − Y') + g^lse ⊙ S] ⊙ (1 − (A/c)²),   S = exp(A − lse 1ᵀ),

    ``A`` the block's (capped) logits, ``Y_IJ`` its (smoothed) targets, ``ysum`` (bn,) the rows' ``Y1``,
    ``g_I`` and ``g_lse_I`` (bn,) the per-token cotangents (``None``: 0). The caller masks stale rows (by
    ``g``) and columns. §6.3.1's error is :func:`~mdc_jax.rules.softmax.cross_entropy_error`."""
    P = jnp.exp(A - lse_I[:, None])
    r = ysum * (1 + 2 * opts.z_loss * lse_I) if opts.z_loss else ysum  # ∂ℓ/∂lse
    E = g_I[:, None] * cross_entropy_error(P, Y_IJ, r[:, None])
    if g_lse_I is not None:
        E = E + g_lse_I[:, None] * P
    if opts.softcap is not None:  # d(c·tanh(r/c))/dr = 1 − tanh²(r/c)
        E = E * (1 - jnp.square(A / opts.softcap))
    return E


# --- the blocked forward and backward ---------------------------------------------------------


def forward(Z, W, b, targets, soft, bn, bk, acc, opts=NO_OPTIONS):
    """Per-token ``lse`` of the (capped) logits and loss ``ℓ_i = (1ᵀy_i)(1 + z·lse_i) lse_i − y'_i·a_i``,
    both (N,) in ``acc``."""
    N, K = Z.shape[0], W.shape[1]
    vstarts, tstarts = block_starts(K, bk), block_starts(N, bn)

    def token_block(carry, xs):
        lse_all, loss_all = carry
        _, t0 = xs
        Z_I = jax.lax.dynamic_slice_in_dim(Z, t0, bn)
        T_I = jax.lax.dynamic_slice_in_dim(targets, t0, bn)
        ysum = row_sums(T_I, soft, K, acc, opts)

        def vocab_block(c, ys):
            m, s, ya = c
            j, k0 = ys
            A, _ = block_logits(Z_I, W, b, k0, bk, acc, opts)
            fresh = fresh_mask(k0, j, bk)[None, :]  # columns no earlier block covered
            Y = targets_block(T_I, soft, k0, bk, acc, opts, K, ysum)
            ya = ya + jnp.sum(jnp.where(fresh, Y * A, 0.0), axis=1)
            A = jnp.where(fresh, A, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(A, axis=1))
            s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(A - m_new[:, None]), axis=1)
            return (m_new, s, ya), None

        init = (jnp.full((bn,), -jnp.inf, acc), jnp.zeros((bn,), acc), jnp.zeros((bn,), acc))
        (m, s, ya), _ = jax.lax.scan(vocab_block, init, (jnp.arange(len(vstarts), dtype=jnp.int32), vstarts))
        lse = m + jnp.log(s)
        return (jax.lax.dynamic_update_slice_in_dim(lse_all, lse, t0, 0),
                jax.lax.dynamic_update_slice_in_dim(loss_all, ysum * lse_loss(lse, opts) - ya, t0, 0)), None

    init = (jnp.zeros((N,), acc), jnp.zeros((N,), acc))
    (lse, loss), _ = jax.lax.scan(token_block, init, (jnp.arange(len(tstarts), dtype=jnp.int32), tstarts))
    return lse, loss


def backward(soft, bn, bk, acc, res, g, opts=NO_OPTIONS, g_lse=None):
    """∇Z, ∇W, ∇b and ∇targets (float0 for integer labels) for per-token cotangents ``g`` (N,) of the loss
    and ``g_lse`` (N,) of ``lse`` (``None``: 0)."""
    Z, W, b, targets, lse = res
    N, K = Z.shape[0], W.shape[1]
    vstarts, tstarts = block_starts(K, bk), block_starts(N, bn)
    g = g.astype(acc)
    alpha = opts.label_smoothing
    row_mean = soft and bool(alpha)  # ∂(y'·a)/∂y_ik holds α·mean_k a_ik: a whole row's, summed over the blocks

    def token_block(carry, xs):
        dZ, dW, db, dT = carry
        i, t0 = xs
        Z_I = jax.lax.dynamic_slice_in_dim(Z, t0, bn)
        T_I = jax.lax.dynamic_slice_in_dim(targets, t0, bn)
        fresh_rows = fresh_mask(t0, i, bn)
        g_I = jnp.where(fresh_rows, jax.lax.dynamic_slice_in_dim(g, t0, bn), 0)
        g_lse_I = None if g_lse is None else jnp.where(fresh_rows, jax.lax.dynamic_slice_in_dim(g_lse, t0, bn), 0).astype(acc)
        lse_I = jax.lax.dynamic_slice_in_dim(lse, t0, bn)
        ysum = row_sums(T_I, soft, K, acc, opts)

        def vocab_block(c, ys):
            dZ_I, dW, db, dT_I, a_sum = c
            j, k0 = ys
            A, W_J = block_logits(Z_I, W, b, k0, bk, acc, opts)
            fresh = fresh_mask(k0, j, bk)[None, :]
            Y = targets_block(T_I, soft, k0, bk, acc, opts, K, ysum)
            E = jnp.where(fresh, block_error(A, lse_I, Y, ysum, opts, g_I, g_lse_I), 0)
            dZ_I = dZ_I + jnp.dot(E, W_J.T.astype(acc))
            dW_J = jax.lax.dynamic_slice_in_dim(dW, k0, bk, axis=1) + jnp.dot(Z_I.T.astype(acc), E)
            db_J = jax.lax.dynamic_slice_in_dim(db, k0, bk) + jnp.sum(E, axis=0)
            if soft:  # ∂ℓ_i/∂y_ik = (1 + z·lse_i) lse_i − (1 − α) a_ik − α ā_i (ā_i: the row's mean, after the loop)
                old = jax.lax.dynamic_slice_in_dim(dT_I, k0, bk, axis=1)
                new = jnp.where(fresh, g_I[:, None] * (lse_loss(lse_I, opts)[:, None] - (1 - alpha) * A), old)
                dT_I = jax.lax.dynamic_update_slice_in_dim(dT_I, new, k0, 1)
            if row_mean:
                a_sum = a_sum + jnp.sum(jnp.where(fresh, A, 0.0), axis=1)
            return (dZ_I, jax.lax.dynamic_update_slice_in_dim(dW, dW_J, k0, 1),
                    jax.lax.dynamic_update_slice_in_dim(db, db_J, k0, 0), dT_I, a_sum), None

        dT_I = jax.lax.dynamic_slice_in_dim(dT, t0, bn) if soft else dT
        init = (jnp.zeros((bn, Z.shape[1]), acc), dW, db, dT_I, jnp.zeros((bn,), acc))
        (dZ_I, dW, db, dT_I, a_sum), _ = jax.lax.scan(vocab_block, init, (jnp.arange(len(vstarts), dtype=jnp.int32), vstarts))
        old = jax.lax.dynamic_slice_in_dim(dZ, t0, bn)
        dZ = jax.lax.dynamic_update_slice_in_dim(dZ, jnp.where(fresh_rows[:, None], dZ_I, old), t0, 0)
        if soft:
            if row_mean:
                dT_I = dT_I - (g_I * (alpha / K) * a_sum)[:, None]
            oldT = jax.lax.dynamic_slice_in_dim(dT, t0, bn)
            dT = jax.lax.dynamic_update_slice_in_dim(dT, jnp.where(fresh_rows[:, None], dT_I, oldT), t0, 0)
        return (dZ, dW, db, dT), None

    dT0 = jnp.zeros(targets.shape, acc) if soft else jnp.zeros((), acc)
    init = (jnp.zeros(Z.shape, acc), jnp.zeros(W.shape, acc), jnp.zeros(b.shape, acc), dT0)
    (dZ, dW, db, dT), _ = jax.lax.scan(token_block, init, (jnp.arange(len(tstarts), dtype=jnp.int32), tstarts))
    d_targets = dT.astype(targets.dtype) if soft else np.zeros(targets.shape, jax.dtypes.float0)
    return dZ.astype(Z.dtype), dW.astype(W.dtype), db.astype(b.dtype), d_targets


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8, 9))
def _head(Z, W, b, targets, soft, bn, bk, acc, opts, with_lse):
    lse, loss = forward(Z, W, b, targets, soft, bn, bk, acc, opts)
    return (loss, lse) if with_lse else loss


def _head_fwd(Z, W, b, targets, soft, bn, bk, acc, opts, with_lse):
    lse, loss = forward(Z, W, b, targets, soft, bn, bk, acc, opts)
    return ((loss, lse) if with_lse else loss), (Z, W, b, targets, lse)  # N floats beyond the inputs: no logits kept


def _head_bwd(soft, bn, bk, acc, opts, with_lse, res, cts):
    g, g_lse = cts if with_lse else (cts, None)  # without return_lse, no lse cotangent to apply
    return backward(soft, bn, bk, acc, res, g, opts, g_lse)


_head.defvjp(_head_fwd, _head_bwd)


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
                                 block_size=None, z_loss: float = 0.0, label_smoothing: float = 0.0,
                                 softcap: float | None = None, return_lse: bool = False):
    """Softmax cross-entropy of the logits ``Z W + 1bᵀ`` without ever holding them (§6.3.1, blocked).

    .. math::

       \\ell_i = (1 + z\\,\\mathrm{lse}_i)\\,\\mathrm{lse}_i - y'_i\\cdot a_i,\\qquad
       a_i = c\\tanh\\big((W^T z_i + b)/c\\big),\\qquad y'_i = (1-\\alpha)\\,y_i + \\alpha/K,

       \\nabla_{R}J = E = \\operatorname{diag}(g)\\big((\\mathbf 1 + 2z\\,\\mathrm{lse})\\mathbf 1^T \\odot s^1(A) - Y'\\big)
       \\odot \\big(1 - (A/c)^2\\big),\\quad \\nabla_Z J = EW^T,\\; \\nabla_W J = Z^TE,\\; \\nabla_b J = E^T\\mathbf 1,

    with ``R = Z W + 1bᵀ`` the raw logits (no cap: ``A = R`` and the last factor is 1), ``g_i`` the per-token
    cotangent (``1/N`` for the mean); ``return_lse``'s cotangent ``g^lse`` adds ``diag(g^lse) s¹(A)`` inside the
    bracket. Without options this is §6.3.1's ``E = (s¹(A) − Y)/N``.

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
      ignore_index: an integer label whose tokens contribute nothing (loss, z-loss and gradient 0) and
        are left out of the mean; integer labels only.
      block_size: ``None`` (automatic: vocabulary blocks of up to 8192 columns, token blocks keeping a
        block within 2²² logits), an int (the vocabulary block), or ``(token block, vocabulary block)``.
        Blocks need not divide N or K.
      z_loss: ``z >= 0``: each kept token adds ``z·lse_i²`` to its loss (averaged with it for the mean);
        a soft row weighs it by its sum ``1ᵀy_i``.
      label_smoothing: ``α`` in ``[0, 1)``: the targets ``(1 − α) y + α (1ᵀy)/K``, optax's ``smooth_labels``
        for one-hot and probability rows; an ignored token's zero row stays zero.
      softcap: ``c > 0``: the logits ``c·tanh(a/c)`` after the bias; ``lse``, the z-loss and the loss use
        them. ``None``: no cap.
      return_lse: also return the ``(N,)`` log-sum-exp of each token's (capped) logits, ignored tokens
        included, differentiable (its cotangent is applied in the same blocked backward).

    Returns:
      The loss (a scalar, or ``(N,)`` for ``reduction="none"``), in float32 (float64 for float64 inputs);
      ``(loss, lse)`` with ``return_lse=True``.

    Raises:
      ValueError: naming the argument, for shape mismatches, labels out of range (concrete labels),
        float labels of shape ``(N,)``, an unknown reduction, a non-positive block size, a negative
        ``z_loss``, ``label_smoothing`` outside ``[0, 1)`` or a ``softcap`` that is not ``> 0``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44), §6.2 (final equations); Cut Cross-Entropy
      (Wijmans et al. 2024) and Liger Kernel for the blocked form, the softcap and the z-loss.
    """
    fn = "linear_softmax_cross_entropy"
    v.require_choice(fn, "reduction", reduction, REDUCTIONS)
    opts = head_options(fn, {"z_loss": z_loss, "label_smoothing": label_smoothing, "softcap": softcap}, name=None)
    return_lse = v.require_bool(fn, "return_lse", return_lse)
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
    out = _head(Z, W, b, targets, soft, bn, bk, out_dtype, opts, return_lse)
    losses, lse = out if return_lse else (out, None)
    losses = jnp.where(valid, losses, 0.0).astype(out_dtype)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = jnp.sum(losses)
    else:
        loss = jnp.sum(losses) / jnp.maximum(jnp.sum(valid).astype(out_dtype), 1)
    return (loss, lse) if return_lse else loss
