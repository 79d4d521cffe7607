"""Matrix identities with closed-form VJPs: seed 000 §4.4 and §5 (eq. 33–36).

Seed: ``000_3fed0c34b422d74e.txt``. Each function is a ``jax.custom_vjp`` rule whose backward is
the gradient the seed derives in bracket notation; a rule returns a cotangent for every argument
(the other arguments' gradients follow from the same differentials). With ``g`` the incoming
cotangent of the scalar output::

    aᵀx          ∇_x = a,                      ∇_a = x                         (eq. 33)
    xᵀAx         ∇_x = (A + Aᵀ)x,              ∇_A = xxᵀ                       (§5)
    aᵀXb         ∇_X = abᵀ,                    ∇_a = Xb,   ∇_b = Xᵀa           (§5)
    aᵀXXᵀa       ∇_X = 2aaᵀX,                  ∇_a = 2XXᵀa                     (§5)
    tr(AX⁻¹B)    ∇_X = −UᵀVᵀ = −X⁻ᵀAᵀBᵀX⁻ᵀ,    ∇_A = Vᵀ,   ∇_B = Uᵀ            (eq. 34; U = AX⁻¹, V = X⁻¹B)
    tr(X)        ∇_X = I                                                       (§4.4)
    |X|          ∇_X = |X| X⁻ᵀ                                                 (§4.4)
    ln|X|        ∇_X = X⁻ᵀ                                                     (§4.4 with d ln u = du/u)

Matrix-valued, with the incoming cotangent ``G``::

    X⁻¹          d(X⁻¹) = −X⁻¹ dX X⁻¹          ⇒  X̄ = −X⁻ᵀ G X⁻ᵀ               (§4.4)
    xxᵀ          d(xxᵀ) = ((I ⊗ x)₁₃₂ + x ⊗ I) ·₁ dx   ⇒  x̄ = (G + Gᵀ)x         (eq. 35–36)

The VJP of a matrix-valued map is the contraction of the cotangent with the generalised Jacobian
(seed 000 eq. 28–29): for ``xxᵀ``, ``x̄_p = Σ_ij G_ij (δ_ip x_j + x_i δ_jp)``, eq. 36 entry by entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import lu_factor, lu_solve

from .. import _validation as v


def _closed_form(fwd, bwd, value=None):
    """The ``jax.custom_vjp`` rule of ``fwd`` (``args -> (value, residuals)``) and ``bwd`` (``(residuals, g) -> cotangents``).

    Called without differentiation it computes ``value``, or ``fwd``'s value where the residuals cost
    nothing beyond it (the arguments, a product the value needs anyway).
    """
    if value is None:
        def value(*args):
            return fwd(*args)[0]

        value.__name__ = value.__qualname__ = fwd.__name__.removesuffix("_fwd")
    rule = jax.custom_vjp(value)
    rule.defvjp(fwd, bwd)
    return rule


# --------------------------------------------------------------------------------------------
# aᵀx, eq. 33


def _linear_fwd(a, x):
    return jnp.dot(a, x), (a, x)  # residuals: each argument is the other's gradient


def _linear_bwd(res, g):
    a, x = res
    return v.cast_like(g * x, a), v.cast_like(g * a, x)  # ∇_a = x, ∇_x = a


_linear = _closed_form(_linear_fwd, _linear_bwd)


def linear(a: jax.Array, x: jax.Array) -> jax.Array:
    """``f = aᵀx`` with ``∇_x f = a`` (eq. 33) and ``∇_a f = x``.

    .. math::

       d(a^Tx) = a^T dx = a\\cdot dx \\implies \\nabla_x f = a.

    Args:
      a: ``(n,)``.
      x: ``(n,)``.

    Returns:
      The scalar ``aᵀx``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5, eq. 33.
    """
    fn = "linear"
    n = v.require_vector(fn, "a", a)
    v.require_vector(fn, "x", x, n, "the length of a")
    return _linear(a, x)


# --------------------------------------------------------------------------------------------
# xᵀAx, §5


def _quadratic_fwd(x, A):
    Ax = A @ x
    return x @ Ax, (x, A, Ax)  # residuals: x and A, and Ax (half of ∇_x, already computed)


def _quadratic_bwd(res, g):
    x, A, Ax = res
    dx = g * (Ax + A.T @ x)  # ∇_x = (A + Aᵀ)x
    dA = g * (x[:, None] * x[None, :])  # ∇_A = xxᵀ
    return v.cast_like(dx, x), v.cast_like(dA, A)


_quadratic = _closed_form(_quadratic_fwd, _quadratic_bwd)


def quadratic(x: jax.Array, A: jax.Array) -> jax.Array:
    """``f = xᵀAx`` with ``∇_x f = (A + Aᵀ)x`` and ``∇_A f = xxᵀ``.

    .. math::

       d(x^TAx) = dx^TAx + x^TA\\,dx = ((A + A^T)x)\\cdot dx.

    Args:
      x: ``(n,)``.
      A: ``(n, n)``, not necessarily symmetric.

    Returns:
      The scalar ``xᵀAx``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5 (second example, from eq. 33).
    """
    fn = "quadratic"
    n = v.require_vector(fn, "x", x)
    v.require_floating(fn, "A", A)
    v.require_shape(fn, "A", A, (n, n), f"square, matching x's length {n}")
    return _quadratic(x, A)


# --------------------------------------------------------------------------------------------
# aᵀXb, §5


def _bilinear_fwd(a, X, b):
    Xb = X @ b
    return a @ Xb, (a, X, b, Xb)  # residuals: the arguments, and Xb = ∇_a (already computed)


def _bilinear_bwd(res, g):
    a, X, b, Xb = res
    da = g * Xb  # ∇_a = Xb
    dX = g * (a[:, None] * b[None, :])  # ∇_X = abᵀ
    db = g * (X.T @ a)  # ∇_b = Xᵀa
    return v.cast_like(da, a), v.cast_like(dX, X), v.cast_like(db, b)


_bilinear = _closed_form(_bilinear_fwd, _bilinear_bwd)


def bilinear(a: jax.Array, X: jax.Array, b: jax.Array) -> jax.Array:
    """``f = aᵀXb`` with ``∇_X f = abᵀ``.

    .. math::

       d(a^TXb) = a^T dX\\, b = (ab^T)\\cdot dX.

    Args:
      a: ``(m,)``.
      X: ``(m, p)``.
      b: ``(p,)``.

    Returns:
      The scalar ``aᵀXb``; cotangents ``Xb``, ``abᵀ``, ``Xᵀa`` for ``a``, ``X``, ``b``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5 (third example).
    """
    fn = "bilinear"
    m = v.require_vector(fn, "a", a)
    p = v.require_matrix(fn, "X", X, f"({m}, p)", rows=m, why=f"its rows must match a's length {m}")[1]
    v.require_vector(fn, "b", b, p, "X's number of columns")
    return _bilinear(a, X, b)


# --------------------------------------------------------------------------------------------
# aᵀXXᵀa, §5


def _gram_quadratic_fwd(a, X):
    u = X.T @ a
    return u @ u, (a, X, u)  # residuals: a, X and u = Xᵀa, shared by both gradients


def _gram_quadratic_bwd(res, g):
    a, X, u = res
    da = 2 * g * (X @ u)  # ∇_a = 2XXᵀa
    dX = 2 * g * (a[:, None] * u[None, :])  # ∇_X = 2aaᵀX = 2a(Xᵀa)ᵀ
    return v.cast_like(da, a), v.cast_like(dX, X)


_gram_quadratic = _closed_form(_gram_quadratic_fwd, _gram_quadratic_bwd)


def gram_quadratic(a: jax.Array, X: jax.Array) -> jax.Array:
    """``f = aᵀXXᵀa`` with ``∇_X f = 2aaᵀX``.

    .. math::

       d(a^TXX^Ta) = 2a^T dX\\,X^Ta = 2(aa^TX)\\cdot dX.

    Args:
      a: ``(m,)``.
      X: ``(m, p)``.

    Returns:
      The scalar ``‖Xᵀa‖²``; cotangents ``2XXᵀa`` for ``a`` and ``2aaᵀX`` for ``X``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5 (fourth example).
    """
    fn = "gram_quadratic"
    m = v.require_vector(fn, "a", a)
    v.require_matrix(fn, "X", X, f"({m}, p)", rows=m, why=f"its rows must match a's length {m}")
    return _gram_quadratic(a, X)


# --------------------------------------------------------------------------------------------
# tr(AX⁻¹B), eq. 34


def _trace_inverse_parts(A, X, B):
    """U = AX⁻¹ and V = X⁻¹B from one LU factorisation (no explicit inverse)."""
    lu = lu_factor(X)
    V = lu_solve(lu, B)
    U = lu_solve(lu, A.T, trans=1).T  # (X⁻ᵀAᵀ)ᵀ
    return U, V


def _trace_inverse_product_fwd(A, X, B):
    U, V = _trace_inverse_parts(A, X, B)
    # Residuals: the seed's U = AX⁻¹ and V = X⁻¹B; every gradient is built from them alone.
    return jnp.sum(A * V.T), (A, X, B, U, V)


def _trace_inverse_product_bwd(res, g):
    A, X, B, U, V = res
    dA = g * V.T  # ∇_A = (X⁻¹B)ᵀ
    dX = -g * (U.T @ V.T)  # ∇_X = −UᵀVᵀ, eq. 34
    dB = g * U.T  # ∇_B = (AX⁻¹)ᵀ
    return v.cast_like(dA, A), v.cast_like(dX, X), v.cast_like(dB, B)


_trace_inverse_product = _closed_form(_trace_inverse_product_fwd, _trace_inverse_product_bwd)


def trace_inverse_product(A: jax.Array, X: jax.Array, B: jax.Array) -> jax.Array:
    """``f = tr(AX⁻¹B)`` with ``∇_X f = −X⁻ᵀAᵀBᵀX⁻ᵀ`` (eq. 34).

    .. math::

       d\\,\\mathrm{tr}(AX^{-1}B) = -(U\\,dX\\,V)\\cdot I = -(U^TV^T)\\cdot dX,
       \\qquad U = AX^{-1},\\; V = X^{-1}B.

    ``U`` and ``V`` come from one LU factorisation of ``X``; ``X⁻¹`` is never formed.

    Args:
      A: ``(m, p)``.
      X: ``(p, p)``, nonsingular.
      B: ``(p, m)``.

    Returns:
      The scalar ``tr(AX⁻¹B)``; cotangents ``(X⁻¹B)ᵀ``, ``−UᵀVᵀ``, ``(AX⁻¹)ᵀ`` for ``A``, ``X``, ``B``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5, eq. 34; §4.4 for ``d(X⁻¹)``.
    """
    fn = "trace_inverse_product"
    p = v.require_square(fn, "X", X)
    m = v.require_matrix(fn, "A", A, f"(m, {p})", cols=p, why=f"its columns must match X's order {p}")[0]
    v.require_floating(fn, "B", B)
    v.require_shape(fn, "B", B, (p, m), f"X's order {p} rows and A's {m} rows as columns, so AX⁻¹B is square")
    return _trace_inverse_product(A, X, B)


# --------------------------------------------------------------------------------------------
# tr(X), X⁻¹, |X|, ln|X|: §4.4


def _trace_fwd(X):
    return jnp.trace(X), X  # residual: X for its shape and dtype only (a reference, not a copy)


def _trace_bwd(X, g):
    return (v.cast_like(g * jnp.eye(X.shape[0], dtype=X.dtype), X),)  # d tr(X) = I·dX


_trace = _closed_form(_trace_fwd, _trace_bwd)


def trace(X: jax.Array) -> jax.Array:
    """``tr(X)`` with ``∇_X tr(X) = I``.

    .. math::

       d(\\mathrm{tr}(X)) = d(X\\cdot I) = dX\\cdot I.

    Args:
      X: ``(n, n)``.

    Returns:
      The scalar trace.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.4 (first result).
    """
    v.require_square("trace", "X", X)
    return _trace(X)


def _inverse_fwd(X):
    Y = jnp.linalg.inv(X)
    return Y, Y  # residual: X⁻¹ alone; d(X⁻¹) = −X⁻¹ dX X⁻¹ needs nothing else


def _inverse_bwd(Y, G):
    return (-(Y.T @ G @ Y.T),)  # X̄ = −X⁻ᵀ G X⁻ᵀ


_inverse = _closed_form(_inverse_fwd, _inverse_bwd)


def inverse(X: jax.Array) -> jax.Array:
    """``X⁻¹`` with the VJP of ``d(X⁻¹) = −X⁻¹ dX X⁻¹``.

    .. math::

       d(X^{-1}) = -X^{-1}\\,dX\\,X^{-1} \\implies \\bar X = -X^{-T}\\,G\\,X^{-T}

    for a cotangent ``G`` of ``X⁻¹`` (``G·d(X⁻¹) = −(X⁻ᵀGX⁻ᵀ)·dX``).

    Args:
      X: ``(n, n)``, nonsingular.

    Returns:
      ``X⁻¹``, ``(n, n)``.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.4 (second result).
    """
    v.require_square("inverse", "X", X)
    return _inverse(X)


def _det_value(X):
    return jnp.linalg.det(X)  # undifferentiated: |X| alone, no X⁻¹


def _det_fwd(X):
    D = jnp.linalg.det(X)
    return D, (D, jnp.linalg.inv(X))  # residuals: |X| and X⁻¹, the two factors of ∇|X|


def _det_bwd(res, g):
    D, Xinv = res
    return (g * D * Xinv.T,)  # d|X| = |X| X⁻ᵀ·dX


_det = _closed_form(_det_fwd, _det_bwd, value=_det_value)


def det(X: jax.Array) -> jax.Array:
    """``|X|`` with ``∇_X |X| = |X| X⁻ᵀ`` (the cofactor matrix).

    .. math::

       d|X| = |X|X^{-T}\\cdot dX = |X|\\,\\mathrm{tr}(X^{-1}dX).

    Args:
      X: ``(n, n)``, nonsingular (the closed form goes through ``X⁻¹``; at a singular ``X`` the
        cofactor matrix exists but this rule returns non-finite values).

    Returns:
      The scalar determinant.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.4 (third result).
    """
    v.require_square("det", "X", X)
    return _det(X)


def _logdet_value(X):
    return jnp.linalg.slogdet(X)[1]  # undifferentiated: no X⁻¹


def _logdet_fwd(X):
    return jnp.linalg.slogdet(X)[1], jnp.linalg.inv(X)  # residual: X⁻¹ = ∇ ln|X| transposed


def _logdet_bwd(Xinv, g):
    return (g * Xinv.T,)  # d ln|X| = d|X| / |X| = X⁻ᵀ·dX


_logdet = _closed_form(_logdet_fwd, _logdet_bwd, value=_logdet_value)


def logdet(X: jax.Array) -> jax.Array:
    """``ln|det X|`` with ``∇_X = X⁻ᵀ``.

    .. math::

       d\\ln|X| = \\frac{d|X|}{|X|} = X^{-T}\\cdot dX.

    The sign of the determinant is dropped (``slogdet``'s second output); for ``det X > 0``, e.g.
    a covariance matrix, this is ``ln det X``.

    Args:
      X: ``(n, n)``, nonsingular.

    Returns:
      The scalar ``ln|det X|``.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.4 (third result, divided by ``|X|``).
    """
    v.require_square("logdet", "X", X)
    return _logdet(X)


# --------------------------------------------------------------------------------------------
# xxᵀ, eq. 35–36


def _outer_self_fwd(x):
    return x[:, None] * x[None, :], x  # residual: x; the Jacobian (eq. 36) is linear in x


def _outer_self_bwd(x, G):
    return ((G + G.T) @ x,)  # x̄_p = Σ_ij G_ij (δ_ip x_j + x_i δ_jp), eq. 36


_outer_self = _closed_form(_outer_self_fwd, _outer_self_bwd)


def outer_self(x: jax.Array) -> jax.Array:
    """``xxᵀ`` whose Jacobian is eq. 35–36.

    .. math::

       d(xx^T) = ((I\\otimes x)_{132} + x\\otimes I)\\cdot_1 dx,\\qquad
       \\frac{\\partial (xx^T)_{ij}}{\\partial x_p} = \\delta_{ip}x_j + x_i\\delta_{jp},

    so the VJP of a cotangent ``G`` is ``(G + Gᵀ)x``; ``jax.jacrev(outer_self)(x)[i, j, p]`` is the
    tensor of eq. 36.

    Args:
      x: ``(n,)``.

    Returns:
      ``xxᵀ``, ``(n, n)``.

    References:
      ``000_3fed0c34b422d74e.txt`` §5, eq. 35–36.
    """
    v.require_vector("outer_self", "x", x)
    return _outer_self(x)
