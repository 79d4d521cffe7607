"""Array kernels below the rules: blocked loops that are not a closed form of their own.

A rule or a solver that walks an axis in fixed-size blocks (the fused head's token and vocabulary
blocks, the Newton solvers' row chunks) keeps one compiled body for every block by **moving the last
block back** so that it ends at the axis's end; the rows (or columns) it shares with the block before
were counted there and are masked out by :func:`fresh_mask`. Written once here, used by
``rules/linear_ce.py`` and the weighted Gram kernels.

The weighted Gram kernels, :func:`weighted_gram` (``Xᵀ diag(w) X``, the cost of every binary Hessian
and Newton step) and :func:`softmax_weighted_gram` (the multinomial Hessian's data term), are sums
over row chunks (:func:`row_chunk_sum`): ``diag(w) X`` of a chunk is formed and multiplied while it is
in cache, never for the whole of ``X``. Why the default sizes are what they are, with the figures
measured, is in ``docs/newton.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def lead(a: jax.Array, like: jax.Array) -> jax.Array:
    """``a`` with unit axes in front, to ``like``'s rank: a per-row factor (``N × d``) broadcast over the
    leading column axes of a stack of back-propagated columns (``C × N × d``), explicitly (the curvature
    code propagates many columns through the rules' recursions at once)."""
    return a.reshape((1,) * (like.ndim - a.ndim) + a.shape)


def block_start(index, total: int, block: int):
    """Where block ``index`` of the ``⌈total/block⌉`` blocks of ``block`` entries covering ``0..total``
    starts: ``index·block``, except the last, which is moved back to ``total − block`` so that every
    block has the same static size (it overlaps the one before; :func:`fresh_mask` masks the overlap).
    ``index`` is a NumPy array of indices (computed on the host), or an int or a traced int (a loop
    counter: a JAX scalar). ``block`` must be in ``1..total``."""
    minimum = np.minimum if isinstance(index, np.ndarray) else jnp.minimum
    return minimum(index * block, total - block)


def block_starts(total: int, block: int) -> np.ndarray:
    """:func:`block_start` of every block, as a NumPy int32 array (the ``xs`` of a scan over blocks)."""
    return block_start(np.arange(-(-total // block)), total, block).astype(np.int32)


def fresh_mask(start, index, block: int) -> jax.Array:
    """``(block,)`` bools: which entries of block ``index`` (starting at ``start``, see :func:`block_starts`)
    no earlier block covered. All true except in a moved-back last block."""
    return (start + jnp.arange(block, dtype=jnp.int32)) >= index * block


# --------------------------------------------------------------------------------------------
# Weighted Gram matrices by row chunks


_GRAM_BLOCK = 512  # above d = 1024 (timed: docs/newton.md): narrower blocks skip more of the lower triangle, but multiply slower


def gram_sizes(n: int, d: int) -> tuple[int, int]:
    """``(rows, block)``: the row-chunk height and the column-block width :func:`weighted_gram` uses by
    default for an ``(n, d)`` matrix (timed on XLA:CPU: see ``docs/newton.md``)."""
    block = d if d <= 160 else 128 if d <= 512 else 256 if d <= 1024 else _GRAM_BLOCK
    rows = 4096 if d <= 64 else 1024 if d <= 512 else 2048
    return min(rows, n), block


def _upper_gram(X, B, block):
    """The upper block triangle of ``Xᵀ B`` (``B = diag(w) X``), zeros below it; ``(d, d)``."""
    d = X.shape[1]
    contract_rows = (((0,), (0,)), ((), ()))
    if block >= d:
        return jax.lax.dot_general(X, B, contract_rows)
    columns = []
    for lo in range(0, d, block):
        hi = min(d, lo + block)
        top = jax.lax.dot_general(X[:, :hi], B[:, lo:hi], contract_rows)  # rows 0..hi of column block lo..hi
        columns.append(jnp.pad(top, ((0, d - hi), (0, 0))))
    return jnp.concatenate(columns, axis=1)


def row_chunk_sum(part, arrays, rows: int):
    """``Σ_chunks part(*chunk_of_each_array, valid)`` over row chunks of height ``rows``.

    One ``lax.fori_loop`` over ``⌈n/rows⌉`` chunks, so ``part`` is traced once. The last chunk is
    moved back to end at row ``n`` (:func:`block_start`) and its rows already counted are flagged
    ``valid = False`` (:func:`fresh_mask`; ``part`` must give them zero weight). ``part`` returns a
    pytree of sums.
    """
    n = arrays[0].shape[0]
    rows = min(rows, n)
    chunks = -(-n // rows)

    def chunk(i):
        start = block_start(i, n, rows)
        return part(*(jax.lax.dynamic_slice_in_dim(A, start, rows) for A in arrays), fresh_mask(start, i, rows))

    if chunks == 1:
        return part(*arrays, jnp.ones(n, bool))
    first = chunk(0)
    return jax.lax.fori_loop(1, chunks, lambda i, acc: jax.tree.map(jnp.add, acc, chunk(i)), first)


def weighted_gram(X: jax.Array, w: jax.Array, block: int | None = None, rows: int | None = None,
                  ones: bool = False, v: jax.Array | None = None):
    """``Xᵀ diag(w) X``, exactly symmetric, computing only the upper block triangle and mirroring it.

    The rows are taken ``rows`` at a time (:func:`row_chunk_sum`), so ``diag(w) X`` exists one
    chunk at a time; within a chunk, column block ``j`` of the upper triangle is
    ``X_c[:, :hi]ᵀ (w_c ∘ X_c[:, lo:hi])``, which saves ``(b − 1)/2b`` of the FLOPs with ``b``
    blocks. The diagonal blocks are averaged with their transposes, so the result is exactly
    symmetric. ``block`` and ``rows`` default to :func:`gram_sizes`; ``block ≥ d`` is one matmul per
    chunk.

    With ``ones=True`` the result is the ``(d + 1) × (d + 1)`` Gram matrix of ``[X 1]`` (a model's
    intercept), whose last row and column ``wᵀX`` and ``Σw`` are accumulated in the same pass over
    the chunks: ``[X 1]`` is never formed.

    With a vector ``v`` (``(n,)``) it returns ``(G, vᵀX)`` (``vᵀ[X 1]`` with ``ones``), the product
    accumulated from the same chunks: a gradient ``Xᵀr`` beside its Hessian, one pass over ``X``.
    """
    n, d = X.shape
    default_rows, default_block = gram_sizes(n, d)
    block = default_block if block is None else block
    rows = default_rows if rows is None else rows
    w = w.astype(X.dtype)
    vs = () if v is None else (v.astype(X.dtype),)

    def part(Xc, wc, *rest):  # the chunk's upper block triangle; with ones wᵀX_c, Σw_c; with v vᵀX_c, Σv_c
        valid = rest[-1]
        wc = jnp.where(valid, wc, 0)
        out = {"U": _upper_gram(Xc, Xc * wc[:, None], block)}  # diag(w) X, the explicit broadcast
        if ones:
            out.update(wX=wc @ Xc, w1=jnp.sum(wc))
        if v is not None:
            vc = jnp.where(valid, rest[0], 0)
            out.update(vX=vc @ Xc, v1=jnp.sum(vc))
        return out

    acc = row_chunk_sum(part, (X, w, *vs), rows)
    U = acc["U"]
    blk = jnp.arange(d) // block  # one block when block ≥ d: then G = (U + Uᵀ)/2
    above, same = blk[:, None] < blk[None, :], blk[:, None] == blk[None, :]
    G = jnp.where(above, U, jnp.where(same, (U + U.T) / 2, U.T))
    if ones:
        G = jnp.block([[G, acc["wX"][:, None]], [acc["wX"][None, :], acc["w1"][None, None]]])
    if v is None:
        return G
    return G, (jnp.concatenate([acc["vX"], acc["v1"][None]]) if ones else acc["vX"])


def softmax_rows(n: int, D: int, k: int) -> int:
    """Row-chunk height of :func:`softmax_weighted_gram`: ``k`` blocks ``diag(π_a) X_c`` of about
    1 MiB in float64 in all (256 rows at D = 51, k = 10), and at least 256 rows, the contraction
    length below which XLA:CPU's matmuls lose speed (timings in ``docs/newton.md``)."""
    return int(min(n, max(256, 2 ** int(np.log2(max(1, 2**17 // (k * D)))))))


def softmax_weighted_gram(X: jax.Array, P: jax.Array, r: jax.Array | None = None, rows: int | None = None,
                          ones: bool = False) -> jax.Array:
    """``Σ_n r_n x_n x_nᵀ ⊗ (diag π_n − π_n π_nᵀ)`` as a ``(D, k, D, k)`` tensor: the multinomial
    Hessian's data term (docs/derivations.md), ``x̃_n = [x_n 1]`` and ``D = d + 1`` with ``ones``.

    Never forms an ``n × D × k × k`` (nor ``n × Dk``) array. Row chunks of ``c`` samples
    (:func:`row_chunk_sum`, ``rows`` defaulting to :func:`softmax_rows`) give ``B_a = diag(π_a) X̃_c``
    (``k × c × D``); class column block ``b`` is one batched matmul ``[X̃_c, B_0, …, B_b]ᵀ B_b``
    (rows scaled by ``r``): its first block is ``X̃ᵀ diag(r π_b) X̃`` (the ``δ_ab π_a`` term), the
    others ``X̃ᵀ diag(r π_a π_b) X̃`` for ``a ≤ b`` (the rank-k ``ππᵀ`` term). That is
    ``k(k + 3)/2`` weighted Gram matrices of size ``D`` per chunk where the unstructured product
    takes ``k²``; the blocks ``a > b`` are mirrored. (The alternatives measured are in
    ``docs/newton.md``.)

    Args:
      X: ``(n, d)``, samples as rows. P: ``(n, k)``, rows of class probabilities. r: ``(n,)`` row
        weights (``Y1`` for the loss's Hessian) or ``None`` for ones. rows: the chunk height.
      ones: append a column of ones to ``X`` (a model's intercept), without forming ``[X 1]``.

    Returns:
      ``H[i, a, j, b]``, exactly symmetric under ``(i, a) ↔ (j, b)``.
    """
    n, d = X.shape
    k = P.shape[1]
    D = d + int(ones)
    rows = softmax_rows(n, D, k) if rows is None else rows
    P = P.astype(X.dtype)
    weights = jnp.ones(n, X.dtype) if r is None else r.astype(X.dtype)

    def part(Xc, Pc, rc, valid):
        rc = jnp.where(valid, rc, 0)  # rows of the moved-back last chunk counted before: weight 0
        if ones:
            Xc = jnp.concatenate([Xc, jnp.ones((Xc.shape[0], 1), Xc.dtype)], axis=1)
        B = Pc.T[:, :, None] * Xc[None, :, :]  # (k, c, D): B[a] = diag(π_a) X̃_c
        blocks = []
        for b in range(k):
            left = jnp.concatenate([Xc[None], B[: b + 1]], axis=0) * rc[None, :, None]  # (b + 2, c, D)
            prod = jax.lax.dot_general(left, B[b], (((1,), (0,)), ((), ())))  # (b + 2, D, D)
            col = -prod[1:].at[b].add(-prod[0])  # blocks (a, b), a ≤ b: δ_ab X̃ᵀdiag(rπ_b)X̃ − X̃ᵀdiag(rπ_aπ_b)X̃
            blocks.append(jnp.pad(col, ((0, k - b - 1), (0, 0), (0, 0))))
        return jnp.stack(blocks, axis=1)  # (k, k, D, D): [a, b] = block (a, b), zeros for a > b

    U = row_chunk_sum(part, (X, P, weights), rows)
    lower = jnp.swapaxes(jnp.swapaxes(U, 0, 1), 2, 3) * (1 - jnp.eye(k, dtype=U.dtype))[:, :, None, None]
    H = (U + lower).transpose(2, 0, 3, 1)  # [i, a, j, b]
    flat = H.reshape(D * k, D * k)
    return ((flat + flat.T) / 2).reshape(D, k, D, k)
