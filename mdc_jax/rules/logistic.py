"""Binary and multinomial logistic regression: closed-form gradients and Hessians.

Seed: ``004_c4a3fcbc5e77e7ce.txt``, §3.2 (binary, eq. 3.3–3.15) and §3.3 (multinomial, left
unfinished there; finished in ``docs/derivations.md``). The seed stacks samples as columns
(``X`` is ``d × n``); here samples are rows, ``X`` is ``n × d``, so the seed's ``Xᵀθ`` is our ``Xθ``
and its ``X(π − y)`` is our ``Xᵀ(π − y)``. We add the ridge term ``λ/2 ‖θ‖²`` of the solvers.

Binary, ``z = Xθ``, ``π = σ[z]`` (seed: ``π = σ[Xᵀθ]``)::

    L(θ)   = −yᵀ log[π] − (1 − y)ᵀ log[1 − π] + λ/2 θᵀθ
           = yᵀ softplus[−z] + (1 − y)ᵀ softplus[z] + λ/2 θᵀθ      (finite for any margin)
    ∇_θ L  = Xᵀ(π − y) + λθ                                        (eq. 3.9, transposed)
    ∇²_θ L = Xᵀ diag(π ∘ (1 − π)) X + λI                           (eq. 3.14)

Multinomial, ``A = XΘ`` (``Θ`` is ``d × k``), ``Π = s¹(A)`` the row-wise softmax (seed: the
column-wise ``σ(ΘᵀX)``, the transpose), ``r = Y1`` (ones for one-hot rows)::

    L(Θ)   = −1ᵀ (Y ∘ log[Π]) 1 + λ/2 Θ·Θ
    ∇_Θ L  = Xᵀ(Π ∘ r1ᵀ − Y) + λΘ          = Xᵀ(Π − Y) + λΘ for one-hot or probability rows
    ∇²_Θ L [i,a,j,b] = Σ_n r_n x_ni x_nj (δ_ab π_na − π_na π_nb) + λ δ_ij δ_ab

The seed's eq. 3.19–3.20 apply ``diag(Π)⁻¹`` and the softmax Jacobian in the wrong order and
lose the sum over classes; the derivation in ``docs/derivations.md`` replaces them.

The loss rules also return cotangents for ``X`` (``(π − y)θᵀ``, ``(Π − Y)Θᵀ``), for the labels
(``−z``, ``−log Π``) and for ``λ`` (``½‖θ‖²``), so they compose inside larger programs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from .softmax import log_softmax

# The weighted Gram matrix Xᵀ diag(w) X, the cost of every Hessian here, is accumulated over row
# chunks (so that diag(w) X of a chunk is formed and multiplied while it is in cache, never for the
# whole of X) and, within a chunk, over column blocks of the upper block triangle only (its lower
# triangle is the mirror), which saves (b − 1)/2b of the FLOPs with b blocks. The sizes were chosen
# by timing XLA:CPU on a 2-core x86 machine (float64, n = 20000..1000000, d = 50..1000; see
# docs/newton.md): blocks narrower than ~128 columns or chunks far from a few MiB run slower per FLOP.
_GRAM_BLOCK = 512  # the block width before row chunks were added: kept as the default above d = 1024


def gram_sizes(n: int, d: int) -> tuple[int, int]:
    """``(rows, block)``: the row-chunk height and the column-block width :func:`weighted_gram` uses by
    default for an ``(n, d)`` matrix."""
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
    moved back to end at row ``n`` and its rows already counted are flagged ``valid = False``
    (``part`` must give them zero weight). ``part`` returns a pytree of sums.
    """
    n = arrays[0].shape[0]
    rows = min(rows, n)
    chunks = -(-n // rows)

    def chunk(i):
        start = jnp.minimum(i * rows, n - rows)
        valid = start + jnp.arange(rows) >= i * rows
        return part(*(jax.lax.dynamic_slice_in_dim(A, start, rows) for A in arrays), valid)

    if chunks == 1:
        return part(*arrays, jnp.ones(n, bool))
    first = chunk(0)
    return jax.lax.fori_loop(1, chunks, lambda i, acc: jax.tree.map(jnp.add, acc, chunk(i)), first)


def weighted_gram(X: jax.Array, w: jax.Array, block: int | None = None, rows: int | None = None,
                  ones: bool = False, v: jax.Array | None = None):
    """``Xᵀ diag(w) X``, exactly symmetric, computing only the upper block triangle and mirroring it.

    The rows are taken ``rows`` at a time (:func:`row_chunk_sum`), so ``diag(w) X`` exists one
    chunk at a time; within a chunk, column block ``j`` of the upper triangle is
    ``X_c[:, :hi]ᵀ (w_c ∘ X_c[:, lo:hi])``. The diagonal blocks are averaged with their transposes,
    so the result is exactly symmetric. ``block`` and ``rows`` default to :func:`gram_sizes`;
    ``block ≥ d`` is one matmul per chunk.

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
    length below which XLA:CPU's matmuls lose speed (d = 200, k = 10, float32: 626 ms with 64 rows,
    348 with 256, 316 with 1024)."""
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
    takes ``k²``; the blocks ``a > b`` are mirrored. (Folding the diagonal term into
    ``[B_{<b}, diag(1 − π_b) X̃]ᵀ B_b``, ``k(k + 1)/2`` products, measured no faster under XLA:CPU,
    838 vs 816 ms at n = 100000, d = 50, k = 10; one unstructured ``BᵀB``, 1021 ms.)

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


# --------------------------------------------------------------------------------------------
# Binary logistic regression, §3.2


def _logistic_value(theta, X, y, l2):
    z = X @ theta
    # −y log σ(z) − (1 − y) log σ(−z), without the cancellation of softplus(z) − yz
    nll = jnp.sum(y * jax.nn.softplus(-z) + (1 - y) * jax.nn.softplus(z))
    return nll + l2 * jnp.sum(theta * theta) / 2, z


@jax.custom_vjp
def _logistic_loss(theta, X, y, l2):
    return _logistic_value(theta, X, y, l2)[0]


def _logistic_loss_fwd(theta, X, y, l2):
    L, z = _logistic_value(theta, X, y, l2)
    # Residuals: the margins z = Xθ (π = σ(z) is recomputed: one element-wise op), θ and X for the
    # two matrix products of the backward, y, and λ.
    return L, (theta, X, y, z, l2)


def _logistic_loss_bwd(res, g):
    theta, X, y, z, l2 = res
    e = jax.nn.sigmoid(z) - y  # π − y
    dtheta = g * (e @ X + l2 * theta)  # ∇_θ L = Xᵀ(π − y) + λθ (as eᵀX: XLA:CPU's Xᵀe is ~8× slower)
    dX = g * (e[:, None] * theta[None, :])  # ∇_X L = (π − y)θᵀ
    dy = -g * z  # ∇_y L = softplus(−z) − softplus(z) = −z
    dl2 = g * jnp.sum(theta * theta) / 2
    return (v.cast_like(dtheta, theta), v.cast_like(dX, X), v.cast_like(dy, y), v.cast_like(dl2, l2))


_logistic_loss.defvjp(_logistic_loss_fwd, _logistic_loss_bwd)


def _check_binary(fn, theta, X, y, l2):
    v.require_floating(fn, "X", X)
    n, d = v.require_ndim(fn, "X", X, 2, "(n, d): samples are rows")
    v.require_floating(fn, "theta", theta)
    v.require_shape(fn, "theta", theta, (d,), f"one weight per column of X, d = {d}")
    v.require_samples(fn, "X", (n, d))
    v.require_floating(fn, "y", y, "Pass labels in {0, 1} as floats, e.g. y.astype(X.dtype).")
    v.require_shape(fn, "y", y, (n,), f"one label per row of X, n = {n}")
    labels = v.concrete(y)
    if labels is not None:
        bad = labels[~((labels >= 0) & (labels <= 1))]  # NaN too
        if bad.size:
            v.fail(fn, f"y must hold labels (or probabilities) in [0, 1]; got value(s) {np.unique(bad)[:5].tolist()}.")
    v.require_penalty(fn, "l2", l2)
    return v.as_penalty(l2, jnp.result_type(theta))


def logistic_loss(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """Binary logistic negative log-likelihood with a ridge term, and its closed-form gradient.

    .. math::

       L(\\theta) = \\sum_i -y_i\\log\\sigma(x_i^T\\theta) - (1-y_i)\\log(1-\\sigma(x_i^T\\theta))
       + \\frac{\\lambda}{2}\\theta^T\\theta,\\qquad
       \\nabla_\\theta L = X^T(\\pi - y) + \\lambda\\theta,\\quad \\pi = \\sigma[X\\theta].

    The value is computed as ``yᵀ softplus[−Xθ] + (1 − y)ᵀ softplus[Xθ]``, finite for margins of
    any size.

    Args:
      theta: weights, ``(d,)``.
      X: observations, ``(n, d)``; samples are rows (the seed's ``X`` is our ``Xᵀ``).
      y: labels in ``[0, 1]``, ``(n,)``, floating.
      l2: the ridge weight λ ≥ 0: a number or a 0-d array (an integer one is cast to ``theta``'s dtype).

    Returns:
      The scalar loss; ``jax.grad`` returns cotangents for ``theta``, ``X`` (``(π − y)θᵀ``), ``y``
      (``−Xθ``) and ``l2`` (``½θᵀθ``).

    Raises:
      ValueError: at trace time, naming the argument and shapes, for inconsistent input.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.3–3.10.
    """
    l2 = _check_binary("logistic_loss", theta, X, y, l2)
    return _logistic_loss(theta, X, y, l2)


def logistic_gradient(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """``∇_θ L = Xᵀ(σ[Xθ] − y) + λθ`` (§3.2, eq. 3.9 transposed), as a plain function.

    The same formula as :func:`logistic_loss`'s backward, for solvers that want the gradient
    without the loss. Arguments as in :func:`logistic_loss`; returns ``(d,)``.
    """
    l2 = _check_binary("logistic_gradient", theta, X, y, l2)
    return (jax.nn.sigmoid(X @ theta) - y) @ X + l2 * theta  # (π − y)ᵀX: see _logistic_loss_bwd


def logistic_hessian(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """The Hessian of :func:`logistic_loss` in θ, §3.2 eq. 3.14 plus the ridge.

    .. math::

       \\nabla^2_\\theta L = X^T\\operatorname{diag}(\\pi\\circ(1-\\pi))X + \\lambda I,
       \\qquad \\pi = \\sigma[X\\theta].

    ``π(1 − π)`` is computed as ``σ(z)σ(−z)`` (no cancellation when ``π ≈ 1``), and the Gram
    matrix by :func:`weighted_gram`, which multiplies only the upper block triangle. ``y`` does not
    enter the Hessian; it is taken so that the signature matches the loss.

    Args:
      theta, X, y, l2: as in :func:`logistic_loss`.

    Returns:
      ``(d, d)``, symmetric, the layout of ``jax.hessian``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.11–3.15.
    """
    l2 = _check_binary("logistic_hessian", theta, X, y, l2)
    z = X @ theta
    w = jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)  # π ∘ (1 − π)
    H = weighted_gram(X, w)
    return H + l2 * jnp.eye(theta.shape[0], dtype=H.dtype)


# --------------------------------------------------------------------------------------------
# Multinomial logistic regression, §3.3 (finished in docs/derivations.md)


def _multinomial_value(Theta, X, Y, l2):
    logP = log_softmax(X @ Theta, axis=1)  # log[Π], finite for any logits
    return -jnp.sum(Y * logP) + l2 * jnp.sum(Theta * Theta) / 2, logP


@jax.custom_vjp
def _multinomial_loss(Theta, X, Y, l2):
    return _multinomial_value(Theta, X, Y, l2)[0]


def _multinomial_loss_fwd(Theta, X, Y, l2):
    L, logP = _multinomial_value(Theta, X, Y, l2)
    # Residuals: log Π (Π = exp of it is recomputed, and ∇_Y needs log Π itself), Θ, X, Y, λ.
    return L, (Theta, X, Y, logP, l2)


def _multinomial_E(logP, Y):
    """``E = ∇_A L = Π ∘ (Y1)1ᵀ − Y``; ``Π − Y`` for rows of Y summing to one."""
    return jnp.exp(logP) * jnp.sum(Y, axis=1, keepdims=True) - Y


def _multinomial_loss_bwd(res, g):
    Theta, X, Y, logP, l2 = res
    E = g * _multinomial_E(logP, Y)
    dTheta = X.T @ E + (g * l2) * Theta  # ∇_Θ L = Xᵀ(Π − Y) + λΘ
    dX = E @ Theta.T  # ∇_X L = (Π − Y)Θᵀ
    dY = -g * logP  # ∇_Y L = −log[Π]
    dl2 = g * jnp.sum(Theta * Theta) / 2
    return (v.cast_like(dTheta, Theta), v.cast_like(dX, X), v.cast_like(dY, Y), v.cast_like(dl2, l2))


_multinomial_loss.defvjp(_multinomial_loss_fwd, _multinomial_loss_bwd)


def _check_multinomial(fn, Theta, X, Y, l2):
    v.require_floating(fn, "X", X)
    n, d = v.require_ndim(fn, "X", X, 2, "(n, d): samples are rows")
    v.require_floating(fn, "Theta", Theta)
    d_theta, k = v.require_ndim(fn, "Theta", Theta, 2, f"(d, k) with d = {d}, X's columns")
    if d_theta != d:
        v.fail(fn, f"Theta has shape {(d_theta, k)}; expected ({d}, k): one row per column of X.")
    if k == 0:
        v.fail(fn, f"Theta has shape {(d_theta, k)}; expected at least one column (k >= 1 classes).")
    v.require_samples(fn, "X", (n, d))
    v.require_floating(fn, "Y", Y, f"For integer labels pass jax.nn.one_hot(labels, {k}).")
    v.require_shape(fn, "Y", Y, (n, k), f"(n, k): X's {n} rows and Theta's {k} classes")
    rows = v.concrete(Y)
    if rows is not None:
        bad = rows[~(rows >= 0) | ~np.isfinite(rows)]  # NaN and inf too
        if bad.size:
            v.fail(fn, f"Y must hold non-negative, finite label rows (one-hot or probabilities); got value(s) "
                       f"{np.unique(bad)[:5].tolist()}.")
    v.require_penalty(fn, "l2", l2)
    return v.as_penalty(l2, jnp.result_type(Theta))


def multinomial_loss(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """Multinomial (softmax) negative log-likelihood with a ridge term, closed-form gradient.

    .. math::

       L(\\Theta) = -\\sum_i y_i^T\\log s(\\Theta^T x_i) + \\frac{\\lambda}{2}\\Theta\\cdot\\Theta,
       \\qquad \\nabla_\\Theta L = X^T(\\Pi - Y) + \\lambda\\Theta,\\quad \\Pi = s^1(X\\Theta).

    For rows of ``Y`` that do not sum to one the exact gradient ``Xᵀ(Π ∘ (Y1)1ᵀ − Y) + λΘ`` is used.

    Args:
      Theta: weights, ``(d, k)``.
      X: observations, ``(n, d)``; samples are rows (the seed's ``X`` and ``Y`` are transposed).
      Y: one-hot or probability rows, ``(n, k)``, floating.
      l2: the ridge weight λ ≥ 0: a number or a 0-d array (an integer one is cast to ``Theta``'s dtype).

    Returns:
      The scalar loss; ``jax.grad`` returns cotangents for ``Theta``, ``X`` (``(Π − Y)Θᵀ``), ``Y``
      (``−log Π``) and ``l2`` (``½Θ·Θ``).

    Raises:
      ValueError: at trace time, naming the argument and shapes, for inconsistent input.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.3 (completed in ``docs/derivations.md``);
      ``000_3fed0c34b422d74e.txt`` §6.3.1, eq. 41–44.
    """
    l2 = _check_multinomial("multinomial_loss", Theta, X, Y, l2)
    return _multinomial_loss(Theta, X, Y, l2)


def multinomial_gradient(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """``∇_Θ L = Xᵀ(Π − Y) + λΘ``, the formula of :func:`multinomial_loss`'s backward.

    Arguments as in :func:`multinomial_loss`; returns ``(d, k)``.
    """
    l2 = _check_multinomial("multinomial_gradient", Theta, X, Y, l2)
    return X.T @ _multinomial_E(log_softmax(X @ Theta, axis=1), Y) + l2 * Theta


def multinomial_hessian(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """The Hessian of :func:`multinomial_loss` in Θ, as a ``(d, k, d, k)`` tensor.

    .. math::

       \\frac{\\partial^2 L}{\\partial\\Theta_{ia}\\,\\partial\\Theta_{jb}}
       = \\sum_n r_n\\, x_{ni}x_{nj}\\,(\\delta_{ab}\\pi_{na} - \\pi_{na}\\pi_{nb})
         + \\lambda\\,\\delta_{ij}\\delta_{ab},\\qquad r = Y\\mathbf 1,

    i.e. ``Σ_n (x_n x_nᵀ) ⊗ r_n(diag(π_n) − π_n π_nᵀ) + λI``: each sample's softmax Jacobian
    (seed 004 eq. 2.10) weighted by its outer product. ``r_n = 1`` for one-hot or probability rows.

    Args:
      Theta, X, Y, l2: as in :func:`multinomial_loss`.

    Returns:
      ``H`` of shape ``(d, k, d, k)``, the layout of ``jax.hessian``; ``H.reshape(d*k, d*k)`` is the
      matrix for the row-major flattening of ``Θ``. It is singular along ``Θ ↦ Θ + v1ᵀ`` when
      ``λ = 0`` (adding a vector to every class leaves the probabilities unchanged).

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §2.3 eq. 2.10 and §3.3; derivation in ``docs/derivations.md``.
    """
    l2 = _check_multinomial("multinomial_hessian", Theta, X, Y, l2)
    d, k = Theta.shape
    P = jnp.exp(log_softmax(X @ Theta, axis=1))
    H = softmax_weighted_gram(X, P, jnp.sum(Y, axis=1))  # by row chunks: no n × d × k × k array
    ridge = l2 * (jnp.eye(d, dtype=H.dtype)[:, None, :, None] * jnp.eye(k, dtype=H.dtype)[None, :, None, :])
    return H + ridge
