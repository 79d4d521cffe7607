"""The objectives the Newton loop minimises: ridge-penalised binary and multinomial NLLs.

Built on the rules: the likelihoods and their derivatives in the linear predictor are
:mod:`mdc_jax.rules.logistic`'s (:func:`~mdc_jax.rules.logistic.logistic_nll`,
:func:`~mdc_jax.rules.logistic.logistic_residual`, :func:`~mdc_jax.rules.logistic.logistic_weights`,
:func:`~mdc_jax.rules.logistic.multinomial_nll`, :func:`~mdc_jax.rules.logistic.multinomial_error`), and
so is the penalty (:func:`~mdc_jax.rules.logistic.ridge`); the Gram matrices are :mod:`mdc_jax.kernels`'.
What is added here is the solvers' part: the intercept (``X̃ = [X 1]``, never formed), the penalty mask
``M`` (1 on coefficients, 0 on intercepts, which are not penalised), and a cache of the linear predictor so
that the line search never reads ``X``. With them::

    J(w) = Σ_i NLL_i + λ/2 ‖Mθ‖²,      ∇J = X̃ᵀ(π − y) + λ M θ,      ∇²J = X̃ᵀ diag(π(1 − π)) X̃ + λ diag(M)

(binary, seed 004 eq. 3.9 and 3.14), or ``X̃ᵀ(Π − Y)`` and ``Σ_n x̃_n x̃_nᵀ ⊗ (diag π_n − π_n π_nᵀ)``
(multinomial, ``docs/derivations.md``): scikit-learn's ``LogisticRegression(C=1/λ)`` objective times ``C``.

Multinomial null directions: adding a constant to every class's intercept (or, with ``λ = 0``, a vector
to every class's coefficients) leaves the probabilities unchanged, so the Hessian is singular along it.
As scikit-learn does, the last class's intercept (and, with ``λ = 0``, its coefficient column) is held at
zero (:func:`multinomial_free_entries`), and the fit centres the result afterwards.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..kernels import softmax_weighted_gram, weighted_gram
from ..rules.logistic import (
    logistic_nll,
    logistic_residual,
    logistic_weights,
    multinomial_error,
    multinomial_nll,
    ridge,
)
from ..rules.softmax import log_softmax
from .newton import Objective


def autodiff_objective(value) -> Objective:
    """The same Newton method on ``jax.grad`` and ``jax.hessian`` of a plain-JAX objective ``value(w)``:
    the ``derivatives="autodiff"`` baseline of the solvers (and of ``train.grad: autodiff``). No cache:
    every value in the line search recomputes the objective from ``X``."""
    return Objective(value=lambda w, aux: value(w), grad=lambda w, aux: jax.grad(value)(w),
                     hess=lambda w, aux: jax.hessian(value)(w), ray=lambda w, aux, p: (),
                     move=lambda aux, ray, t: ())


def with_ones(X):
    """``[X 1]``, for the autodiff baseline only (the closed form never forms it)."""
    return jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)


def binary_objective(X, y, l2, fit_intercept: bool, hessian_dtype: str) -> Objective:
    """The binary objective of ``w = [θ, b]`` (``b`` only with an intercept) on the cached margins
    ``z = Xθ + b``.

    Per Newton step it reads ``X`` twice: the ray ``Xp``, and the gradient ``[(π − y)ᵀX + λθ, Σ(π − y)]``
    together with the next Hessian ``[Xᵀ diag(s) X, Xᵀs; sᵀX, Σs]`` (``s = π(1 − π)``; the Gram matrix
    by row chunks and upper column blocks) in one pass, or the gradient alone after the last step (see
    :func:`~mdc_jax.solvers.newton.newton`). The intercept's row and column come from the same chunks:
    ``[X 1]`` is never formed. With ``hessian_dtype`` below ``X``'s the Hessian reads a lower-precision
    copy of ``X``.
    """
    d = X.shape[1]
    D = d + int(fit_intercept)
    mask = jnp.arange(D) < d  # the penalty's mask: the intercept is not penalised
    theta = lambda w: w[:d]
    Xh = X.astype(hessian_dtype)  # X itself when hessian_dtype is X's

    def value(w, z):
        return logistic_nll(z, y) + ridge(theta(w), l2)

    def ridge_grad(w):
        return l2 * jnp.where(mask, w, 0)  # λMw

    def ridge_hess():
        return jnp.diag(jnp.where(mask, l2, 0))  # λ diag(M)

    def grad(w, z):
        r = logistic_residual(z, y)  # π − y
        g = r @ X  # (π − y)ᵀX as a row-vector product: XLA:CPU's Xᵀr is slower (docs/newton.md)
        return (jnp.concatenate([g, jnp.sum(r, keepdims=True)]) if fit_intercept else g) + ridge_grad(w)

    def hess(w, z):
        s = logistic_weights(z.astype(hessian_dtype))  # π(1 − π)
        G = weighted_gram(Xh, s, ones=fit_intercept)  # of [X 1] with an intercept, without forming it
        return G.astype(X.dtype) + ridge_hess()

    def grad_hess(w, z):
        if jnp.dtype(hessian_dtype) != X.dtype:  # the gradient must stay in X's precision: two passes
            return grad(w, z), hess(w, z)
        G, g = weighted_gram(X, logistic_weights(z), ones=fit_intercept, v=logistic_residual(z, y))  # and (π − y)ᵀ[X 1]
        return g + ridge_grad(w), G + ridge_hess()

    def ray(w, z, p):
        return X @ p[:d] + p[d] if fit_intercept else X @ p

    return Objective(value, grad, hess, ray, move=lambda z, u, t: z + t * u, grad_hess=grad_hess)


def multinomial_free_entries(d: int, k: int, fit_intercept: bool, fix_column: bool) -> np.ndarray:
    """Row-major positions, in ``Φ = [Θ; bᵀ]`` (``D × k``), of the entries the multinomial Newton system
    is solved over: all but the last class's intercept and, with ``fix_column`` (``λ = 0``), its
    coefficient column (see the module docstring). Row-major is the flattening of ``H.reshape(Dk, Dk)``."""
    D = d + int(fit_intercept)
    free = np.ones((D, k), bool)
    if fit_intercept:
        free[d, k - 1] = False  # the reference class's intercept
    if fix_column:
        free[:d, k - 1] = False  # with λ = 0, the reference class's coefficients as well
    return np.flatnonzero(free.ravel())


def multinomial_unflatten(w, free: np.ndarray, shape: tuple[int, int]):
    """``Φ`` (``shape``) with ``w`` at the free entries (:func:`multinomial_free_entries`), zeros elsewhere."""
    return jnp.zeros(shape[0] * shape[1], w.dtype).at[free].set(w).reshape(shape)


def multinomial_penalty_mask(d: int, k: int, fit_intercept: bool, dtype):
    """``M`` of shape ``(D, k)``: 1 on ``Θ``'s rows, 0 on the intercepts' (not penalised)."""
    D = d + int(fit_intercept)
    return jnp.asarray(np.arange(D)[:, None] < d, dtype) * jnp.ones((1, k), dtype)


def multinomial_objective(X, Y, l2, fit_intercept: bool, free: np.ndarray) -> Objective:
    """The multinomial objective of the free entries ``w`` of ``Φ = [Θ; bᵀ]`` on the cached logits
    ``A = XΘ + 1bᵀ``. Per step it reads ``X`` for the Hessian (:func:`~mdc_jax.kernels.softmax_weighted_gram`),
    the ray ``XP`` and the gradient ``X̃ᵀE`` (``E = Π − Y``)."""
    d, k = X.shape[1], Y.shape[1]
    D = d + int(fit_intercept)
    mask = multinomial_penalty_mask(d, k, fit_intercept, X.dtype)
    unflatten = lambda w: multinomial_unflatten(w, free, (D, k))

    def logits_of(Phi):
        return X @ Phi[:d] + Phi[d][None, :] if fit_intercept else X @ Phi

    def value(w, A):
        return multinomial_nll(log_softmax(A, axis=1), Y) + ridge(mask * unflatten(w), l2)

    def grad(w, A):
        E = multinomial_error(log_softmax(A, axis=1), Y, row_sums=1.0)  # Π − Y: Y's rows are one-hot
        G = E.T @ X  # (k, d): X̃ᵀE transposed
        G = jnp.concatenate([G.T, jnp.sum(E, axis=0)[None]], axis=0) if fit_intercept else G.T
        return (G + l2 * mask * unflatten(w)).reshape(-1)[free]

    def hess(w, A):
        H = softmax_weighted_gram(X, jnp.exp(log_softmax(A, axis=1)), ones=fit_intercept)  # (D, k, D, k)
        H = H.reshape(D * k, D * k) + jnp.diag(l2 * mask.reshape(-1))  # row-major Φ's flattening
        return H[free][:, free]

    ray = lambda w, A, p: logits_of(unflatten(p))
    return Objective(value, grad, hess, ray, move=lambda A, U, t: A + t * U)
