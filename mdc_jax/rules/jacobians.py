"""Explicit Jacobians of the sigmoid and the softmax, and the cross-entropy as a rule.

Seed: ``004_c4a3fcbc5e77e7ce.txt``, §2.1–2.3 and §3.1. The seed stacks samples as *columns*
(``X`` is ``m × n``, one sample per column); mdc_jax stacks them as *rows* (``X`` is ``n × k``), so
the seed's column-wise softmax ``σ(X)`` is ``softmax_jacobian(Xᵀ)``'s row-wise case, or
``softmax_jacobian(X, axis=0)`` on the seed's own layout.

Element-wise operators, eq. 2.2 and the sigmoid, eq. 2.4::

    dφ(x) = diag(f'[x]) dx,        ∇σ[x] = diag(σ[x] ∘ (1 − σ[x]))

Softmax of a vector, eq. 2.10, and column-wise of an ``m × n`` matrix, eq. 2.13::

    ∇σ(x) = diag(σ(x)) − σ(x)σ(x)ᵀ
    d vec σ(X) = (diag(vec σ(X)) − (I_n ⊗ 11ᵀ) ∘ (vec σ(X) vec σ(X)ᵀ)) d vec X

The ``(I_n ⊗ 11ᵀ)`` mask makes eq. 2.13's Jacobian block-diagonal: block ``i`` is eq. 2.10 for
sample ``i``. We return the ``n`` blocks, ``(n, k, k)``, unless the full ``nk × nk`` matrix is asked
for (``block_diagonal=True``); it is ``O(n²k²)`` memory for ``O(nk²)`` information.

Cross-entropy, §3.1, eq. 3.1, with the minus sign that the seed's §3.1 derivation drops
(it writes ``H = p̂ᵀ log[q̂]`` and ``∇_q̂ H = diag(q̂)⁻¹ p̂``)::

    H(p, q) = −pᵀ log[q],      ∇_p H = −log[q],      ∇_q H = −diag(q)⁻¹ p = −p ⊘ q
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from ..activations import sigmoid_derivative
from .softmax import sigmoid, softmax, softmax_grad


def _check_jacobian_input(fn: str, x, axis, block_diagonal) -> tuple[tuple[int, ...], int, bool]:
    """Returns (x's shape, axis as an int, block_diagonal as a bool)."""
    v.require_floating(fn, "x", x)
    shape = v.shape_of(x)
    if len(shape) not in (1, 2):
        v.fail(fn, f"x must be a vector (k,) or a matrix of samples (n, k); got shape {shape}.")
    ax = v.static_int(axis)
    if ax not in (0, 1, -1):
        v.fail(fn, f"axis must be -1 (samples are rows, as in mdc_jax) or 0 (samples are columns, "
                   f"as in seed 004); got {axis!r}.")
    return shape, ax, v.require_bool(fn, "block_diagonal", block_diagonal)


def _blocks_to_matrix(blocks: jax.Array, axis: int) -> jax.Array:
    """The ``(n, k, k)`` blocks laid out as the ``nk × nk`` block-diagonal Jacobian.

    For ``axis=0`` (samples are columns) the ordering is the seed's column-major ``vec``, for
    ``axis=-1`` (samples are rows) it is row-major ``x.reshape(-1)``: either way one sample's ``k``
    entries are contiguous, so the matrix is block-diagonal.
    """
    n, k, _ = blocks.shape
    eye_n = jnp.eye(n, dtype=blocks.dtype)
    # (I_n ⊗ 11ᵀ) ∘ (…) of eq. 2.13, written as a product with δ_ij instead of a mask.
    full = eye_n[:, None, :, None] * blocks[:, :, None, :]
    return full.reshape(n * k, n * k)


def softmax_jacobian(x: jax.Array, axis: int = -1, *, block_diagonal: bool = False) -> jax.Array:
    """The Jacobian of the softmax, eq. 2.10 for a vector and eq. 2.13 for a batch.

    .. math::

       \\nabla\\sigma(x) = \\operatorname{diag}(\\sigma(x)) - \\sigma(x)\\sigma(x)^T,\\qquad
       \\frac{\\partial\\, \\mathrm{vec}\\,\\sigma(X)}{\\partial\\, \\mathrm{vec}\\,X}
       = \\operatorname{diag}(\\mathrm{vec}\\,\\sigma(X))
         - (I_n\\otimes \\mathbf 1\\mathbf 1^T)\\circ(\\mathrm{vec}\\,\\sigma(X)\\,\\mathrm{vec}\\,\\sigma(X)^T).

    Both terms are symmetric, so the Jacobian is also the gradient (the seed's remark after 2.10).

    Args:
      x: a vector ``(k,)``, or a matrix of ``n`` samples. With ``axis=-1`` (default, mdc_jax's
        convention) samples are rows, ``x`` is ``(n, k)`` and the softmax runs along each row;
        with ``axis=0`` samples are columns, ``x`` is ``(k, n)`` as in seed 004 §2.3.
      axis: the axis the probabilities sum over (ignored for a vector); a Python or NumPy int.
      block_diagonal: for a matrix, return the full ``(nk, nk)`` block-diagonal matrix of eq. 2.13
        instead of its ``n`` diagonal blocks. The flattening is row-major ``x.reshape(-1)`` for
        ``axis=-1`` and the seed's column-major ``vec(x)`` for ``axis=0``.

    Returns:
      ``(k, k)`` for a vector; ``(n, k, k)`` per-sample blocks for a matrix (block ``i`` is the
      Jacobian of sample ``i``'s probabilities with respect to its own logits), or ``(nk, nk)``
      with ``block_diagonal=True``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §2.3, eq. 2.10–2.13; ``000_3fed0c34b422d74e.txt`` §4.3.5.
    """
    fn = "softmax_jacobian"
    shape, axis, block_diagonal = _check_jacobian_input(fn, x, axis, block_diagonal)
    k = shape[0] if len(shape) == 1 or axis == 0 else shape[1]
    if k == 0:
        v.fail(fn, f"x has shape {shape}, with no classes (k = 0) along the softmax's axis; expected k >= 1.")
    if len(shape) == 1:
        return softmax_grad(softmax(x, 0))
    S = softmax(x, axis % 2)
    blocks = softmax_grad(S.T if axis == 0 else S)  # one sample per row: block i is eq. 2.10 for sample i
    return _blocks_to_matrix(blocks, axis) if block_diagonal else blocks


def sigmoid_jacobian(x: jax.Array, *, block_diagonal: bool = False) -> jax.Array:
    """The Jacobian of the element-wise sigmoid, eq. 2.2 with eq. 2.4.

    .. math::

       \\nabla\\sigma[x] = \\operatorname{diag}(\\sigma[x]\\circ(\\mathbf 1 - \\sigma[x])).

    Args:
      x: a vector ``(k,)`` or a matrix of samples ``(n, k)`` (samples are rows).
      block_diagonal: for a matrix, return the full ``(nk, nk)`` diagonal matrix over row-major
        ``x.reshape(-1)`` instead of the ``n`` per-sample blocks.

    Returns:
      ``(k, k)`` for a vector; ``(n, k, k)`` per-row diagonal blocks for a matrix, or ``(nk, nk)``
      with ``block_diagonal=True``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §2.1, eq. 2.2; §2.2, eq. 2.3–2.4.
    """
    fn = "sigmoid_jacobian"
    shape, _, block_diagonal = _check_jacobian_input(fn, x, -1, block_diagonal)
    d = sigmoid_derivative(sigmoid(x))  # σ' = σ(1 − σ), eq. 2.4
    if len(shape) == 1:
        return jnp.diag(d)
    if block_diagonal:
        return jnp.diag(d.reshape(-1))
    return jax.vmap(jnp.diag)(d)


# --------------------------------------------------------------------------------------------
# Cross-entropy, §3.1


@jax.custom_vjp
def _cross_entropy(p, q):
    return -jnp.sum(p * jnp.log(q))


def _cross_entropy_fwd(p, q):
    log_q = jnp.log(q)
    # Residuals: p (for ∇_q = −p ⊘ q), q, and log q (∇_p, already computed for the value).
    return -jnp.sum(p * log_q), (p, q, log_q)


def _cross_entropy_bwd(res, g):
    p, q, log_q = res
    dp = -g * log_q  # ∇_p H = −log[q]
    dq = -g * (p / q)  # ∇_q H = −diag(q)⁻¹ p
    return dp.astype(p.dtype), dq.astype(q.dtype)


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def cross_entropy(p: jax.Array, q: jax.Array) -> jax.Array:
    """Cross-entropy ``H(p, q) = −pᵀ log[q]`` with the closed-form gradients of §3.1.

    .. math::

       H(p, q) = -p^T\\log[q],\\qquad \\nabla_p H = -\\log[q],\\qquad
       \\nabla_q H = -\\operatorname{diag}(q)^{-1}p = -p\\oslash q.

    The seed's §3.1 drops the minus sign of eq. 3.1 when it stacks samples; we keep it, so ``H ≥ 0``
    for probabilities. Arrays of any rank are summed over every entry (``−p·ln q`` in seed 000's
    notation): for ``n`` samples stacked as rows, ``p`` and ``q`` are ``(n, k)`` and ``H`` is the
    summed cross-entropy.

    Args:
      p: target probabilities (or weights), any floating shape.
      q: predicted probabilities, same shape as ``p``; entries must be finite and ``> 0`` (``∇_q``
        divides by ``q``; use a log-softmax loss for logits). Checked when ``q`` is concrete.

    Returns:
      The scalar ``H``; ``jax.grad`` returns cotangents for both ``p`` and ``q``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.1, eq. 3.1 and the gradient after it (sign corrected).
    """
    fn = "cross_entropy"
    v.require_floating(fn, "p", p)
    v.require_floating(fn, "q", q)
    shape = v.shape_of(p)
    if len(shape) == 0:
        v.fail(fn, "p must have at least one axis; got a scalar.")
    v.require_shape(fn, "q", q, shape, "the same shape as p")
    if math.prod(shape) == 0:
        v.fail(fn, f"p has shape {shape}, with no entries; expected at least one.")
    v.require_entries(fn, "q", q, lambda q: ~(q > 0) | ~np.isfinite(q), "non-positive or non-finite",
                      "finite entries > 0 (∇_q divides by q)")
    return _cross_entropy(p, q)
