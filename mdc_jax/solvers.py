"""Newton's method (IRLS) for ridge-penalised logistic regression, on the closed-form rules.

Seed: ``004_c4a3fcbc5e77e7ce.txt`` §3.2, which motivates the Hessian by IRLS, and §3.3. Samples are
rows. With ``X̃ = [X 1]`` when an intercept is fitted and ``M`` the penalty mask (1 on coefficients,
0 on the intercept, which is not penalised), each iteration solves the Newton system by Cholesky::

    g = ∇L(θ) + λ M θ,      H = ∇²L(θ) + λ diag(M),      H p = −g,      θ ← θ + t p

with ``∇L = X̃ᵀ(π − y)``, ``∇²L = X̃ᵀ diag(π(1 − π)) X̃`` (binary, eq. 3.9 and 3.14) or
``X̃ᵀ(Π − Y)`` and ``Σ_n x̃_n x̃_nᵀ ⊗ (diag π_n − π_n π_nᵀ)`` (multinomial, ``docs/derivations.md``),
and ``t`` halved from 1 until the Armijo condition holds. The objective,
``Σ_i NLL_i + λ/2 ‖Mθ‖²``, is scikit-learn's ``LogisticRegression(C=1/λ)`` objective times ``C``.

Convergence follows scikit-learn's ``newton-cholesky`` test on the *mean* objective (``J/n``),
checked after each step on the new gradient and the decrement of the step just taken (so no
Hessian is formed at the final point)::

    max |g| / n ≤ tol    and    ½ gᵀH⁻¹g / n ≤ tol          (Newton decrement)

Multinomial null directions: adding a constant to every class's intercept (or, with ``λ = 0``,
a vector to every class's coefficients) leaves the probabilities unchanged, so the Hessian is
singular along it. As scikit-learn does, the last class's intercept (and, with ``λ = 0``, its
coefficient column) is held at zero during the iterations, and the result is centred afterwards
(``Σ_a b_a = 0``, and ``Σ_a Θ_{ia} = 0`` with ``λ = 0``; with ``λ > 0`` the penalty already centres
``Θ``). Predictions do not change.

Singular Hessians (duplicated or constant columns with ``λ = 0``) and linearly separable data with
``λ = 0`` (no finite maximiser of the likelihood) raise :class:`SingularHessianError` instead of
returning diverging or NaN coefficients. A Hessian counts as singular when a pivot of the Cholesky
factor of its Jacobi-scaled form ``D^{-1/2} H D^{-1/2}`` falls below ``1000 ε``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from . import reference
from ._validation import as_number, describe_non_finite, is_bool, static_int
from .rules.logistic import (
    logistic_gradient,
    logistic_hessian,
    logistic_loss,
    multinomial_gradient,
    multinomial_hessian,
    multinomial_loss,
)


class NewtonResult(NamedTuple):
    """The result of a Newton fit.

    Attributes:
      coef: ``(d,)`` for binary, ``(d, k)`` for multinomial (scikit-learn's ``coef_`` is its
        transpose, ``(1, d)`` or ``(k, d)``).
      intercept: a scalar for binary, ``(k,)`` for multinomial; zero when not fitted.
      n_iter: Newton steps taken.
      converged: whether both convergence tests held within ``max_iter`` steps.
      grad_norm: ``max |∇J| / n`` at the returned parameters (the mean objective's gradient).
    """

    coef: jax.Array
    intercept: jax.Array
    n_iter: int
    converged: bool
    grad_norm: float


class SingularHessianError(ValueError):
    """The Newton system has no unique solution: the fit is not identifiable without ``l2 > 0``."""


# Status codes of the compiled loop.
_RUNNING, _CONVERGED, _SINGULAR, _LINE_SEARCH_FAILED = 0, 1, 2, 3
_MAX_ITER = 2**31 - 1  # the loop's step counter is an int32


# --------------------------------------------------------------------------------------------
# The compiled Newton loop


def _newton_step(g, H):
    """``p = −H⁻¹g`` by Cholesky of the Jacobi-scaled ``H``, and whether ``H`` is singular."""
    h = jnp.diagonal(H)
    bad_diag = jnp.any(~(h > 0))  # also catches NaN
    s = 1 / jnp.sqrt(jnp.where(h > 0, h, 1))
    L = jnp.linalg.cholesky(H * s[:, None] * s[None, :])
    pivots = jnp.diagonal(L) ** 2
    singular = bad_diag | ~jnp.all(jnp.isfinite(L)) | (jnp.min(pivots) < 1e3 * jnp.finfo(H.dtype).eps)
    p = -s * cho_solve((L, True), s * g)
    return p, singular


def _newton(value, grad, hess, w0, n, tol, max_iter):
    """Damped Newton from ``w0`` inside ``lax.while_loop``: returns (w, n_iter, status).

    As in scikit-learn, convergence is tested after each step, on the new gradient and the
    decrement of the step just taken, so no Hessian is formed at the final point.
    """
    eps = jnp.finfo(w0.dtype).eps

    def cond(state):
        _, _, it, status = state
        return (status == _RUNNING) & (it < max_iter)

    def body(state):
        w, g, it, _ = state
        p, singular = _newton_step(g, hess(w))
        slope = g @ p  # = −gᵀH⁻¹g < 0
        f0 = value(w)
        slack = 16 * eps * jnp.abs(f0)  # accept steps that change f only at rounding level

        def not_enough_decrease(ls):
            t, f_new = ls
            return ~(f_new <= f0 + 1e-4 * t * slope + slack) & (t > 2.0**-40)  # NaN: not enough

        def halve(ls):
            t = ls[0] / 2
            return t, value(w + t * p)

        t, _ = jax.lax.while_loop(lambda ls: ~singular & not_enough_decrease(ls), halve,
                                  (jnp.ones((), w.dtype), value(w + p)))
        failed = ~singular & (t <= 2.0**-40)
        moved = ~singular & ~failed
        w_new = jnp.where(moved, w + t * p, w)
        g_new = grad(w_new)
        converged = moved & (jnp.max(jnp.abs(g_new)) / n <= tol) & (-slope / (2 * n) <= tol)
        status = jnp.select([singular, failed, converged], [_SINGULAR, _LINE_SEARCH_FAILED, _CONVERGED], _RUNNING)
        return w_new, g_new, it + moved.astype(it.dtype), status

    state = (w0, grad(w0), jnp.zeros((), jnp.int32), jnp.asarray(_RUNNING))
    w, _, it, status = jax.lax.while_loop(cond, body, state)
    return w, it, status


def _autodiff(value):
    """The same Newton method on ``jax.grad`` and ``jax.hessian`` of a plain-JAX objective: the
    ``derivatives="autodiff"`` baseline of the solvers (and of ``train.grad: autodiff``)."""
    return value, jax.grad(value), jax.hessian(value)


@functools.partial(jax.jit, static_argnames=("hessian_dtype", "derivatives"))
def _fit_binary(Xa, y, mask, l2, tol, max_iter, hessian_dtype, derivatives):
    n = Xa.shape[0]
    zero = jnp.zeros((), Xa.dtype)
    penalty = lambda w: l2 * jnp.sum((mask * w) ** 2) / 2  # the intercept (mask 0) is not penalised
    if derivatives == "autodiff":
        value, grad, hess = _autodiff(lambda w: reference.logistic_loss(w, Xa, y) + penalty(w))
    else:
        value = lambda w: logistic_loss(w, Xa, y, zero) + penalty(w)
        grad = lambda w: logistic_gradient(w, Xa, y, zero) + l2 * mask * w
        # The Hessian may be formed in a lower precision (the Gram matrix is the cost); the gradient,
        # the line search and the convergence test stay in X's precision, so the solution does too.
        Xh, yh = Xa.astype(hessian_dtype), y.astype(hessian_dtype)
        hess = lambda w: (logistic_hessian(w.astype(hessian_dtype), Xh, yh, zero.astype(hessian_dtype))
                          .astype(Xa.dtype) + l2 * jnp.diag(mask))
    w, it, status = _newton(value, grad, hess, jnp.zeros(Xa.shape[1], Xa.dtype), n, tol, max_iter)
    return w, it, status, jnp.max(jnp.abs(grad(w))) / n


@functools.partial(jax.jit, static_argnames=("fit_intercept", "fix_column", "derivatives"))
def _fit_multinomial(Xa, Y, l2, tol, max_iter, fit_intercept, fix_column, derivatives):
    (n, D), k = Xa.shape, Y.shape[1]
    d = D - int(fit_intercept)
    free = np.ones((D, k), bool)
    if fit_intercept:
        free[d, k - 1] = False  # the reference class's intercept
    if fix_column:
        free[:d, k - 1] = False  # with λ = 0, the reference class's coefficients as well
    free_idx = np.flatnonzero(free.ravel())  # row-major, the flattening of H.reshape(Dk, Dk)
    P = jnp.asarray(np.arange(D)[:, None] < d, Xa.dtype) * jnp.ones((1, k), Xa.dtype)  # penalty mask
    zero = jnp.zeros((), Xa.dtype)

    def unflatten(w):
        return jnp.zeros(D * k, w.dtype).at[free_idx].set(w).reshape(D, k)

    def penalty(Phi):
        return l2 * jnp.sum((P * Phi) ** 2) / 2  # intercepts (P = 0) are not penalised

    if derivatives == "autodiff":
        value, grad, hess = _autodiff(lambda w: reference.multinomial_loss(unflatten(w), Xa, Y) + penalty(unflatten(w)))
    else:
        def value(w):
            Phi = unflatten(w)
            return multinomial_loss(Phi, Xa, Y, zero) + penalty(Phi)

        def grad(w):
            Phi = unflatten(w)
            return (multinomial_gradient(Phi, Xa, Y, zero) + l2 * P * Phi).reshape(-1)[free_idx]

        def hess(w):
            H = multinomial_hessian(unflatten(w), Xa, Y, zero).reshape(D * k, D * k)
            H = H + l2 * jnp.diag(P.reshape(-1))
            return H[free_idx][:, free_idx]

    w, it, status = _newton(value, grad, hess, jnp.zeros(free_idx.size, Xa.dtype), n, tol, max_iter)
    return unflatten(w), it, status, jnp.max(jnp.abs(grad(w))) / n


# --------------------------------------------------------------------------------------------
# Input checks (on concrete arrays, before the compiled loop)


def _refuse_traced(fn, *args):
    """The fits check their data on the host and compile their own Newton loop: no tracers."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        raise ValueError(f"{fn}: got a traced argument (a call inside jax.jit, vmap or grad); the fit checks its "
                         f"data on the host and runs its own compiled Newton loop, so call it outside jit.")


def _as_numpy(fn, name, x, expected):
    """``np.asarray(x)``, with NumPy's own error for ragged nested lists or odd objects named by argument."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{fn}: {name} must be {expected}; NumPy cannot make an array of it ({err}).") from None


def _check_X_shape(fn, shape, dtype):
    """The checks that need only X's shape and dtype (and so also run on a traced X)."""
    if len(shape) != 2:
        raise ValueError(f"{fn}: X must be 2-D with shape (n, d), samples as rows; got shape {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{fn}: X has shape {shape}; expected at least one row and one column.")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)):
        raise ValueError(f"{fn}: X has dtype {dtype} (shape {shape}); expected a real numeric dtype.")


def _check_X(fn, X):
    X = _as_numpy(fn, "X", X, "an (n, d) array-like of numbers, samples as rows")
    _check_X_shape(fn, tuple(X.shape), X.dtype)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(np.float64)
    problem = describe_non_finite("X", X)
    if problem:
        raise ValueError(f"{fn}: {problem}; expected finite values.")
    return X


def _check_options(fn, l2, tol, max_iter):
    """l2, tol and max_iter as Python numbers: Python or NumPy numbers, or 0-d arrays; not bools."""
    l2_value, tol_value, iters = as_number(l2), as_number(tol), static_int(max_iter)
    if l2_value is None or not (0 <= l2_value < np.inf):
        raise ValueError(f"{fn}: l2 must be a finite number >= 0; got {l2!r}.")
    if tol_value is None or not (0 < tol_value < np.inf):
        raise ValueError(f"{fn}: tol must be a finite number > 0; got {tol!r}.")
    if iters is None or iters < 1:
        raise ValueError(f"{fn}: max_iter must be an int >= 1; got {max_iter!r}.")
    if iters > _MAX_ITER:
        raise ValueError(f"{fn}: max_iter must be at most 2**31 - 1 = {_MAX_ITER} (the step counter is int32); "
                         f"got {max_iter!r}.")
    return l2_value, tol_value, iters


def _check_bool(fn, name, x):
    if not is_bool(x):
        raise ValueError(f"{fn}: {name} must be a bool (True or False); got {x!r}.")
    return bool(x)


def _check_hessian_dtype(fn, hessian_dtype, X_dtype):
    if hessian_dtype is None:
        return X_dtype
    try:
        dtype = None if isinstance(hessian_dtype, bool | int | float) else jnp.dtype(hessian_dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in ("float32", "float64"):  # (np.dtype == None holds for float64)
        raise ValueError(f"{fn}: hessian_dtype must be None (X's dtype), 'float32' or 'float64'; got {hessian_dtype!r}.")
    return dtype


def _check_labels(fn, name, labels, n, allowed: str):
    labels = _as_numpy(fn, name, labels, f"an (n,) array-like of integer labels in {allowed}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{fn}: {name} has shape {labels.shape}; expected ({n},), one label per row of X.")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{fn}: {name} has dtype {labels.dtype}; expected integer labels in {allowed}.")
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        raise ValueError(f"{fn}: {name} must hold integer labels in {allowed}; got non-integer value(s) {bad[:5]}.")
    return labels.astype(np.int64)


def _check_derivatives(fn, derivatives):
    if derivatives not in ("closed", "autodiff"):
        raise ValueError(f"{fn}: derivatives must be 'closed' or 'autodiff'; got {derivatives!r}.")


def _with_intercept(X, fit_intercept):
    return np.concatenate([X, np.ones((X.shape[0], 1), X.dtype)], axis=1) if fit_intercept else X


def _raise_on_failure(fn, status, it, l2):
    if status == _SINGULAR:
        hint = "use l2 > 0, or remove duplicated or constant columns of X" if l2 == 0 else \
            "check X for duplicated or constant columns, or increase l2"
        raise SingularHessianError(f"{fn}: the Hessian became singular at Newton step {it} (l2={l2}); the "
                                   f"parameters are not identifiable: {hint}.")


def _raise_if_separable(fn, separated: bool, l2):
    if l2 == 0 and separated:
        raise SingularHessianError(f"{fn}: the classes in X are linearly separable and l2=0, so the likelihood "
                                   f"has no finite maximiser (the coefficients diverge); use l2 > 0.")


# --------------------------------------------------------------------------------------------
# Public API


def fit_logistic_newton(X, y, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8,
                        max_iter: int = 50, hessian_dtype=None, derivatives: str = "closed") -> NewtonResult:
    """Binary ridge logistic regression by Newton's method on the closed-form gradient and Hessian.

    Minimises

    .. math::

       J(\\theta, b) = \\sum_i -y_i\\log\\pi_i - (1-y_i)\\log(1-\\pi_i) + \\frac{\\lambda}{2}\\|\\theta\\|^2,
       \\qquad \\pi = \\sigma[X\\theta + b\\mathbf 1],

    with Newton steps ``H p = −g`` (``H = X̃ᵀdiag(π(1−π))X̃ + λ diag(M)``, §3.2 eq. 3.14) solved by
    Cholesky, a backtracking line search, and scikit-learn's convergence test, all in one compiled
    ``lax.while_loop``. Equals ``LogisticRegression(C=1/l2, solver="newton-cholesky")``.

    The fit checks its data on the host and runs its own compiled loop, so it is not traceable: call
    it outside ``jax.jit`` (a traced argument raises ``ValueError``). :func:`predict_proba_logistic`
    is traceable.

    Args:
      X: ``(n, d)`` finite observations, samples as rows (NumPy or JAX; float32 stays float32,
        integer input becomes float64).
      y: ``(n,)`` labels in ``{0, 1}`` (bool, integer, or integral floats), both classes present.
      l2: the ridge weight λ ≥ 0 on the coefficients (``1/C`` in scikit-learn); the intercept is
        not penalised. Like ``tol`` a Python or NumPy number or a 0-d array (not a bool).
      fit_intercept: fit ``b``; otherwise ``b = 0``. A bool (or ``np.bool_``).
      tol: tolerance on ``max|g|/n`` and on half the Newton decrement ``gᵀH⁻¹g/(2n)``; ``> 0``.
      max_iter: the most Newton steps, an int in ``1..2**31 − 1`` (Python, NumPy or 0-d array).
      derivatives: ``"closed"`` (the closed-form gradient and Hessian) or ``"autodiff"``
        (``jax.grad`` and ``jax.hessian`` of the plain reference objective): the same method, for
        comparison.
      hessian_dtype: the precision of the Hessian ``X̃ᵀdiag(π(1−π))X̃``: ``None`` (default: ``X``'s),
        ``"float32"`` or ``"float64"`` (or the NumPy/JAX dtypes of those names). With
        ``"float32"`` for float64 ``X`` the Gram matrix, which is nearly all the cost, runs in
        float32: an inexact Newton method that may take a step or two more, while the gradient,
        line search and convergence test stay in float64, so it converges to the same solution.

    Returns:
      A :class:`NewtonResult`; ``coef`` is ``(d,)`` and ``intercept`` a scalar.

    Raises:
      ValueError: for non-finite ``X``, labels outside ``{0, 1}``, one class only, mismatched shapes
        or bad options, naming the argument; for a traced argument (a call inside ``jax.jit``).
      SingularHessianError: (a ``ValueError``) for a singular Hessian or separable data with
        ``l2 = 0``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.9 and 3.14.
    """
    fn = "fit_logistic_newton"
    _refuse_traced(fn, X, y, l2, fit_intercept, tol, max_iter)
    X = _check_X(fn, X)
    n, d = X.shape
    l2, tol, max_iter = _check_options(fn, l2, tol, max_iter)
    fit_intercept = _check_bool(fn, "fit_intercept", fit_intercept)
    labels = _check_labels(fn, "y", y, n, "{0, 1}")
    outside = ~np.isin(labels, [0, 1])
    if outside.any():
        raise ValueError(f"{fn}: y must hold labels in {{0, 1}}; got value(s) {np.unique(labels[outside])[:5]} "
                         f"outside it. For more than two classes use fit_multinomial_newton.")
    if np.unique(labels).size < 2:
        raise ValueError(f"{fn}: y contains only the class {labels[0]}; both classes 0 and 1 must be present.")
    Xa = _with_intercept(X, fit_intercept)
    mask = np.r_[np.ones(d), np.zeros(int(fit_intercept))].astype(X.dtype)
    _check_derivatives(fn, derivatives)
    hessian_dtype = _check_hessian_dtype(fn, hessian_dtype, X.dtype)
    w, it, status, gnorm = _fit_binary(Xa, labels.astype(X.dtype), mask, jnp.asarray(l2, X.dtype),
                                       jnp.asarray(tol, X.dtype), jnp.asarray(max_iter, jnp.int32),
                                       hessian_dtype=jnp.dtype(hessian_dtype).name, derivatives=derivatives)
    status, it = int(status), int(it)
    _raise_on_failure(fn, status, it, l2)
    coef, intercept = w[:d], (w[d] if fit_intercept else jnp.zeros((), w.dtype))
    if l2 == 0:
        margins = (2 * labels - 1) * np.asarray(Xa @ np.asarray(w))
        _raise_if_separable(fn, bool(np.all(margins > 0)), l2)
    return NewtonResult(coef, intercept, it, status == _CONVERGED, float(gnorm))


def fit_multinomial_newton(X, labels, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8,
                           max_iter: int = 50, n_classes: int | None = None,
                           derivatives: str = "closed") -> NewtonResult:
    """Multinomial ridge logistic regression by Newton's method on the closed-form gradient and Hessian.

    Minimises

    .. math::

       J(\\Theta, b) = -\\sum_i y_i^T\\log s(\\Theta^Tx_i + b) + \\frac{\\lambda}{2}\\Theta\\cdot\\Theta,

    with ``Y`` the one-hot labels, the ``(d+1)k``-dimensional Newton system of
    :func:`~mdc_jax.rules.logistic.multinomial_hessian` solved by Cholesky after fixing the last
    class's intercept (see the module docstring), and the result centred. Equals scikit-learn's
    multinomial ``LogisticRegression(C=1/l2)``, whose ``coef_`` is ``coef.T``.

    Not traceable, as :func:`fit_logistic_newton`: call it outside ``jax.jit``.

    Args:
      X: ``(n, d)`` finite observations, samples as rows.
      labels: ``(n,)`` integer class labels in ``0..k−1``, every class present.
      l2: the ridge weight λ ≥ 0 on the coefficients; the intercepts are not penalised.
      fit_intercept: fit the ``k`` intercepts. A bool (or ``np.bool_``).
      tol: tolerance on ``max|g|/n`` and ``gᵀH⁻¹g/(2n)``, as in :func:`fit_logistic_newton`.
      max_iter: the most Newton steps, as in :func:`fit_logistic_newton`.
      derivatives: ``"closed"`` (the closed-form gradient and Hessian) or ``"autodiff"``
        (``jax.grad`` and ``jax.hessian`` of the plain reference objective): the same method, for
        comparison.
      n_classes: ``k``, an int >= 2 (Python, NumPy or 0-d array); defaults to ``max(labels) + 1``.

    Returns:
      A :class:`NewtonResult`; ``coef`` is ``(d, k)``, ``intercept`` ``(k,)``.

    Raises:
      ValueError: for non-finite ``X``, labels outside ``0..k−1`` or a class without samples, fewer
        than two classes, mismatched shapes or bad options, naming the argument; for a traced argument.
      SingularHessianError: for a singular Hessian or separable data with ``l2 = 0``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.3 and ``docs/derivations.md``.
    """
    fn = "fit_multinomial_newton"
    _refuse_traced(fn, X, labels, l2, fit_intercept, tol, max_iter, n_classes)
    X = _check_X(fn, X)
    n, d = X.shape
    l2, tol, max_iter = _check_options(fn, l2, tol, max_iter)
    fit_intercept = _check_bool(fn, "fit_intercept", fit_intercept)
    _check_derivatives(fn, derivatives)
    labels = _check_labels(fn, "labels", labels, n, "0..k−1")
    if n_classes is None:
        present = np.unique(labels)
        if present.size == 1:
            raise ValueError(f"{fn}: only one class is present in labels (every label is {present[0]}); a "
                             f"multinomial fit needs at least two classes.")
        n_classes, source = int(labels.max()) + 1, " (max(labels) + 1)"
    else:
        source = ""
    k = static_int(n_classes)
    if k is None or k < 2:
        raise ValueError(f"{fn}: n_classes must be an int >= 2; got {n_classes!r}{source}.")
    outside = (labels < 0) | (labels >= k)
    if outside.any():
        raise ValueError(f"{fn}: labels must lie in 0..{k - 1}; got value(s) {np.unique(labels[outside])[:5]} "
                         f"outside it.")
    counts = np.bincount(labels, minlength=k)
    if np.any(counts == 0):
        raise ValueError(f"{fn}: labels has no sample of class(es) {np.flatnonzero(counts == 0).tolist()} in "
                         f"0..{k - 1}; every class needs at least one sample.")
    Xa = _with_intercept(X, fit_intercept)
    Y = np.eye(k, dtype=X.dtype)[labels]
    Phi, it, status, gnorm = _fit_multinomial(Xa, Y, jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
                                              jnp.asarray(max_iter, jnp.int32), fit_intercept=fit_intercept,
                                              fix_column=(l2 == 0), derivatives=derivatives)
    status, it = int(status), int(it)
    _raise_on_failure(fn, status, it, l2)
    coef = Phi[:d]
    if l2 == 0:
        coef = coef - jnp.mean(coef, axis=1, keepdims=True)  # Σ_a Θ_ia = 0, the minimum-norm solution
    intercept = Phi[d] - jnp.mean(Phi[d]) if fit_intercept else jnp.zeros(k, Phi.dtype)
    if l2 == 0:
        A = np.asarray(X @ np.asarray(coef) + np.asarray(intercept)[None, :])
        correct = A[np.arange(n), labels]
        others = np.where(np.eye(k, dtype=bool)[labels], -np.inf, A)
        _raise_if_separable(fn, bool(np.all(correct > others.max(axis=1))), l2)
    return NewtonResult(coef, intercept, it, status == _CONVERGED, float(gnorm))


def _check_predict(fn, fit, X, ndim):
    """X in the fit's dtype; shape checks only on a traced X (so that predictions run under jit)."""
    if not isinstance(fit, NewtonResult):
        maker = "fit_logistic_newton" if ndim == 1 else "fit_multinomial_newton"
        raise ValueError(f"{fn}: fit must be a NewtonResult (what {maker} returns); got {type(fit).__name__}.")
    coef = fit.coef
    if jnp.ndim(coef) != ndim:
        other = "predict_proba_multinomial" if ndim == 1 else "predict_proba_logistic"
        raise ValueError(f"{fn}: fit.coef has shape {jnp.shape(coef)}; expected {ndim}-D. Use {other} for it.")
    if isinstance(X, jax.core.Tracer):
        _check_X_shape(fn, tuple(X.shape), X.dtype)  # its values are unknown under jit
    else:
        X = _check_X(fn, X)
    if X.shape[1] != jnp.shape(coef)[0]:
        raise ValueError(f"{fn}: X has shape {tuple(X.shape)}; expected (n, {jnp.shape(coef)[0]}), the fit's features.")
    return jnp.asarray(X, jnp.result_type(coef))


def predict_proba_logistic(fit: NewtonResult, X) -> jax.Array:
    """``P(y = 1 | x) = σ(xᵀθ + b)`` for each row of ``X``, ``(n,)``.

    scikit-learn's ``predict_proba(X)[:, 1]``. ``fit`` is a :class:`NewtonResult` of
    :func:`fit_logistic_newton`. Traceable: under ``jax.jit`` only ``X``'s shape and dtype are
    checked (a concrete ``X`` must also be finite).
    """
    X = _check_predict("predict_proba_logistic", fit, X, 1)
    return jax.nn.sigmoid(X @ fit.coef + fit.intercept)


def predict_proba_multinomial(fit: NewtonResult, X) -> jax.Array:
    """``s(Θᵀx + b)`` for each row of ``X``, ``(n, k)``, as scikit-learn's ``predict_proba``.

    ``fit`` is a :class:`NewtonResult` of :func:`fit_multinomial_newton`; traceable as
    :func:`predict_proba_logistic`.
    """
    X = _check_predict("predict_proba_multinomial", fit, X, 2)
    return jax.nn.softmax(X @ fit.coef + fit.intercept[None, :], axis=1)
