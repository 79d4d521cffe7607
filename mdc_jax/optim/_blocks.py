"""The Kronecker-block algebra of K-FAC: damped inverses and eigenbases of the factors, applied to a gradient.

A weight matrix ``W`` ``(d_in, d_out)`` has the GGN block ``≈ A ⊗ B`` (``A`` ``(d_in, d_in)``, ``B``
``(d_out, d_out)``, symmetric PSD) in the row-major ``vec``, where::

    (A ⊗ B) vec(G) = vec(A G Bᵀ),      (A ⊗ B)⁻¹ vec(G) = vec(A⁻¹ G B⁻¹)   (A, B symmetric)

so no ``d_in·d_out``-square matrix is ever formed. A vector (a bias) has the block ``B`` itself. Each
function here is one equation of Martens & Grosse (2015); the optimizer (:mod:`._kfac`) only maps them
over the parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve


class Eigh(NamedTuple):
    """A symmetric PSD factor ``M = Q diag(d) Qᵀ``: ``Q`` orthogonal, ``d ≥ 0`` (rounding's negative
    eigenvalues clipped to 0, as kfac-jax's ``safe_psd_eigh`` does)."""

    Q: jax.Array
    d: jax.Array


def psd_eigh(M: jax.Array) -> Eigh:
    """The eigendecomposition of a symmetric PSD factor (its lower triangle is read)."""
    d, Q = jnp.linalg.eigh(M)
    return Eigh(Q, jnp.maximum(d, 0))


def spd_inverse(M: jax.Array) -> jax.Array:
    """``M⁻¹`` of a symmetric positive definite ``M`` (a damped factor), by Cholesky."""
    return cho_solve(cho_factor(M, lower=True), jnp.eye(M.shape[0], dtype=M.dtype))


def pi(A: jax.Array, B: jax.Array) -> jax.Array:
    """Martens & Grosse's ``π`` for the trace norm, ``π = sqrt((tr A / dim A) / (tr B / dim B))``.

    ``π = 1`` where either mean trace is not positive (a factor of a dead layer, or of a batch without
    signal): kfac-jax splits the damping evenly then too.
    """
    a, b = jnp.trace(A) / A.shape[0], jnp.trace(B) / B.shape[0]
    ok = (a > 0) & (b > 0) & jnp.isfinite(a) & jnp.isfinite(b)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, a / b, 1)), 1)


def factored_inverses(A: jax.Array, B: jax.Array, damping) -> tuple[jax.Array, jax.Array]:
    """Martens & Grosse (2015) §6.3, factored Tikhonov damping: ``A ⊗ B + λI ≈ (A + π√λ I) ⊗ (B + √λ/π I)``.

    .. math::

       \\bigl((A + \\pi\\sqrt\\lambda I)^{-1},\\ (B + \\tfrac{\\sqrt\\lambda}{\\pi} I)^{-1}\\bigr),\\qquad
       \\pi = \\sqrt{\\frac{\\operatorname{tr}A/\\dim A}{\\operatorname{tr}B/\\dim B}}

    Args:
      A, B: the (averaged) factors of one weight matrix, ``(d_in, d_in)`` and ``(d_out, d_out)``.
      damping: ``λ > 0``, a scalar of the factors' dtype.

    Returns:
      The two damped inverses; :func:`kron_solve` applies them.

    References:
      Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate curvature" (ICML
      2015), §6.3; kfac-jax's ``pi_adjusted_kronecker_inverse``.
    """
    p, root = pi(A, B), jnp.sqrt(damping)
    return (spd_inverse(A + (p * root) * jnp.eye(A.shape[0], dtype=A.dtype)),
            spd_inverse(B + (root / p) * jnp.eye(B.shape[0], dtype=B.dtype)))


def damped_inverse(B: jax.Array, damping) -> jax.Array:
    """``(B + λI)⁻¹``: the damped inverse of a vector's whole block (a bias's ``B``)."""
    return spd_inverse(B + damping * jnp.eye(B.shape[0], dtype=B.dtype))


def kron_solve(A_inv: jax.Array, B_inv: jax.Array, G: jax.Array) -> jax.Array:
    """``(A ⊗ B)⁻¹ vec(G) = vec(A⁻¹ G B⁻¹)`` from the (damped) inverses of symmetric factors."""
    return A_inv @ G @ B_inv


def eigen_kron_solve(EA: Eigh, EB: Eigh, G: jax.Array, damping) -> jax.Array:
    """The exact damped inverse of the Kronecker block, from the factors' eigenbases.

    .. math::

       (A\\otimes B + \\lambda I)^{-1}\\operatorname{vec}G
       = \\operatorname{vec}\\Bigl(Q_A\\,\\frac{Q_A^T G\\,Q_B}{d_A d_B^T + \\lambda}\\,Q_B^T\\Bigr)

    (the division entrywise), as ``A ⊗ B = (Q_A ⊗ Q_B) diag(d_A ⊗ d_B) (Q_A ⊗ Q_B)ᵀ``.

    References:
      Martens & Grosse (2015), §6.3 (the exact alternative to factored damping); George et al., "Fast
      approximate natural gradient descent in a Kronecker-factored eigenbasis" (NeurIPS 2018).
    """
    return EA.Q @ ((EA.Q.T @ G @ EB.Q) / (jnp.outer(EA.d, EB.d) + damping)) @ EB.Q.T


def eigen_solve(E: Eigh, g: jax.Array, damping) -> jax.Array:
    """``(B + λI)⁻¹ g = Q_B [(Q_Bᵀ g) / (d_B + λ)]`` for a vector's block."""
    return E.Q @ ((E.Q.T @ g) / (E.d + damping))
