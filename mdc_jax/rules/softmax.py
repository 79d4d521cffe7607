"""Softmax and sigmoid as rules with closed-form VJPs.

Seeds:
  * ``000_3fed0c34b422d74e.txt`` §4.3.5: for ``s(a) = e^a / 1ᵀe^a``, ``∇s = diag(s) − ssᵀ``.
  * ``004_c4a3fcbc5e77e7ce.txt`` §2.2 (eq. 2.4): ``σ'(x) = σ(x)(1 − σ(x))``; §2.3 (eq. 2.10) the
    same softmax Jacobian.

The VJPs apply the Jacobians without forming them. ``∇s`` is symmetric, so for a cotangent ``g``

.. math::

   (\\operatorname{diag}(s) - ss^T) g = s \\odot g - s\\,(s^T g) = s \\odot (g - s^T g),

which is ``O(K)`` per row instead of ``O(K²)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .. import _validation as v
from ..activations import sigmoid_derivative


def log_softmax(A: jax.Array, axis: int = -1) -> jax.Array:
    """Numerically stable ``ln s(A)`` along ``axis`` (plain JAX; used inside forward passes)."""
    shifted = A - jax.lax.stop_gradient(jnp.max(A, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def cross_entropy_error(P: jax.Array, Y: jax.Array, row_sums: jax.Array | None = None) -> jax.Array:
    """§6.3.1's error term without the ``1/N``: ``E = P ⊙ (Y1)1ᵀ − Y``, the gradient of ``−ln s¹(A)·Y``
    with respect to the logits ``A``, for ``P = s¹(A)`` (rows along the last axis).

    The seed drops ``1ᵀy_i`` using ``Σ_k y_ik = 1`` (``E = P − Y``); keeping it makes ``E`` exact for rows
    that do not sum to one. ``row_sums`` gives ``Y1`` when ``Y`` is only a block of the row's columns (the
    fused head's vocabulary blocks); by default it is ``Y``'s own row sums. The one place this formula is
    written: the FCNN and RNN heads, the per-example rows, the fused head's blocks, multinomial regression.
    """
    r = jnp.sum(Y, axis=-1, keepdims=True) if row_sums is None else row_sums
    return P * r - Y


def softmax_vjp(s: jax.Array, g: jax.Array, axis: int = -1) -> jax.Array:
    """``(diag(s) − ssᵀ) g`` along ``axis``, without forming the Jacobian (§4.3.5)."""
    return s * (g - jnp.sum(s * g, axis=axis, keepdims=True))


def softmax_grad(s: jax.Array) -> jax.Array:
    """The softmax's Jacobian from its output, ``∇s = diag(s) − ssᵀ`` (§4.3.5; seed 004 eq. 2.10), formed:
    ``(..., K, K)`` for probabilities ``s`` ``(..., K)`` along the last axis (one matrix per leading index).
    The one place this matrix is written: :func:`mdc_jax.softmax_jacobian` and ``mdc_jax.bracket.softmax``."""
    K = s.shape[-1]
    eye = jnp.eye(K, dtype=s.dtype).reshape((1,) * (s.ndim - 1) + (K, K))  # no implicit rank promotion
    return s[..., :, None] * eye - s[..., :, None] * s[..., None, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _softmax(A, axis):
    return jnp.exp(log_softmax(A, axis))


def _softmax_fwd(A, axis):
    s = _softmax(A, axis)
    return s, s  # residual: s alone; ∇s depends only on s


def _softmax_bwd(axis, s, g):
    return (softmax_vjp(s, g, axis),)


_softmax.defvjp(_softmax_fwd, _softmax_bwd)


def softmax(A: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax along ``axis`` with the closed-form VJP ``g ↦ s ⊙ (g − sᵀg)``.

    With ``axis=-1`` on a matrix this is the paper's row-wise ``s¹(A)`` (samples are rows); the
    second seed's column-wise softmax of a ``k × n`` matrix is ``softmax(X, axis=0)``.

    Args:
      A: a floating array of rank ≥ 1.
      axis: the axis along which the probabilities sum to one (a Python or NumPy int, not a bool).

    Returns:
      ``s(A)``, same shape and dtype as ``A``.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.5; ``004_c4a3fcbc5e77e7ce.txt`` §2.3, eq. 2.10.
    """
    shape = v.shape_of(A)
    v.require_floating("softmax", "A", A)
    return _softmax(A, v.require_axis("softmax", "axis", axis, shape, of="A"))


@jax.custom_vjp
def _sigmoid(x):
    return jax.nn.sigmoid(x)


def _sigmoid_fwd(x):
    z = jax.nn.sigmoid(x)
    return z, z  # residual: σ(x); σ' = σ(1 − σ) needs nothing else


def _sigmoid_bwd(z, g):
    return (g * sigmoid_derivative(z),)


_sigmoid.defvjp(_sigmoid_fwd, _sigmoid_bwd)


def sigmoid(x: jax.Array) -> jax.Array:
    """Element-wise logistic sigmoid with the closed-form VJP ``g ↦ g ⊙ σ ⊙ (1 − σ)``.

    Args:
      x: a floating array of any shape.

    Returns:
      ``σ(x) = 1 / (1 + e^{−x})``, same shape and dtype.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §2.2, eq. 2.3–2.4.
    """
    v.require_floating("sigmoid", "x", x)
    return _sigmoid(x)
