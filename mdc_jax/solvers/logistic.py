"""Binary and multinomial ridge logistic regression by Newton's method: the public fits and predictions.

Each fit checks its input on the host (:mod:`~mdc_jax.solvers.ingest`), runs one compiled program
(``_fit_binary``, ``_fit_multinomial``: the objective of :mod:`~mdc_jax.solvers.objectives` minimised by
the loop of :mod:`~mdc_jax.solvers.newton`), and turns the loop's status into a result or an error
naming the cause. The options ``l2``, ``tol`` and ``max_iter`` are arguments of the compiled program, not
constants in it, so a new value does not compile it again. Seed: ``004_c4a3fcbc5e77e7ce.txt`` §3.2–3.3.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from .. import reference
from ..rules.logistic import ridge
from . import ingest
from .newton import CONVERGED, NON_FINITE, SINGULAR, NewtonResult, SingularHessianError, newton
from .objectives import (
    autodiff_objective,
    binary_objective,
    multinomial_free_entries,
    multinomial_objective,
    multinomial_penalty_mask,
    multinomial_unflatten,
    with_ones,
)


@functools.partial(jax.jit, static_argnames=("fit_intercept", "hessian_dtype", "derivatives"))
def _fit_binary(X, y, l2, tol, max_iter, fit_intercept, hessian_dtype, derivatives):
    """The binary fit, one compiled program: ``w = [θ, b]`` (``b`` only with an intercept); returns
    ``(w, n_iter, status, |g|∞/n, whether the classes are separated)``."""
    n, d = X.shape
    D = d + int(fit_intercept)
    if derivatives == "autodiff":
        Xa = with_ones(X) if fit_intercept else X
        obj = autodiff_objective(lambda w: reference.logistic_loss(w, Xa, y) + ridge(w[:d], l2))
        w, _, it, status, gnorm = newton(obj, jnp.zeros(D, X.dtype), (), n, tol, max_iter)
        return w, it, status, gnorm, jnp.all((2 * y - 1) * (Xa @ w) > 0)
    obj = binary_objective(X, y, l2, fit_intercept, hessian_dtype)
    z0 = jax.lax.optimization_barrier(jnp.zeros(n, X.dtype))  # margins at w = 0 (not constant-folded at compile time)
    w, z, it, status, gnorm = newton(obj, jnp.zeros(D, X.dtype), z0, n, tol, max_iter)
    return w, it, status, gnorm, jnp.all((2 * y - 1) * z > 0)


@functools.partial(jax.jit, static_argnames=("n_classes", "fit_intercept", "fix_column", "derivatives"))
def _fit_multinomial(X, labels, l2, tol, max_iter, n_classes, fit_intercept, fix_column, derivatives):
    """The multinomial fit, one compiled program, over the free entries of ``Φ = [Θ; bᵀ]`` (``D × k``);
    returns ``(Φ, n_iter, status, |g|∞/n, whether the classes are separated)``."""
    (n, d), k = X.shape, n_classes
    shape = (d + int(fit_intercept), k)
    free = multinomial_free_entries(d, k, fit_intercept, fix_column)
    unflatten = lambda w: multinomial_unflatten(w, free, shape)
    Y = jax.nn.one_hot(labels, k, dtype=X.dtype)
    w0 = jnp.zeros(free.size, X.dtype)
    if derivatives == "autodiff":
        Xa = with_ones(X) if fit_intercept else X
        mask = multinomial_penalty_mask(d, k, fit_intercept, X.dtype)
        obj = autodiff_objective(lambda w: reference.multinomial_loss(unflatten(w), Xa, Y) + ridge(mask * unflatten(w), l2))
        w, _, it, status, gnorm = newton(obj, w0, (), n, tol, max_iter)
        A = Xa @ unflatten(w)
    else:
        obj = multinomial_objective(X, Y, l2, fit_intercept, free)
        A0 = jax.lax.optimization_barrier(jnp.zeros((n, k), X.dtype))  # logits at w = 0 (not constant-folded)
        w, A, it, status, gnorm = newton(obj, w0, A0, n, tol, max_iter)
    correct = jnp.take_along_axis(A, labels[:, None], axis=1)[:, 0]
    others = jnp.where(Y > 0, -jnp.inf, A)
    return unflatten(w), it, status, gnorm, jnp.all(correct > jnp.max(others, axis=1))


def _raise_on_failure(fn, status, it, l2):
    if status == SINGULAR:
        hint = "use l2 > 0, or remove duplicated or constant columns of X" if l2 == 0 else \
            "check X for duplicated or constant columns, or increase l2"
        raise SingularHessianError(f"{fn}: the Hessian became singular at Newton step {it} (l2={l2}); the "
                                   f"parameters are not identifiable: {hint}.")


def _raise_if_separable(fn, separated: bool, l2):
    if l2 == 0 and separated:
        raise SingularHessianError(f"{fn}: the classes in X are linearly separable and l2=0, so the likelihood "
                                   f"has no finite maximiser (the coefficients diverge); use l2 > 0.")


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
        integer input becomes float64, and float16 or bfloat16 input is computed in float32, the
        narrowest precision XLA's Cholesky factorisation takes: ``coef`` is then float32).
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
    ingest.refuse_traced(fn, X, y, l2, fit_intercept, tol, max_iter)
    X = ingest.fit_input(fn, X)
    n, d = X.shape
    l2, tol, max_iter = ingest.check_options(fn, l2, tol, max_iter)
    fit_intercept = v.require_bool(fn, "fit_intercept", fit_intercept)
    labels = ingest.binary_labels(fn, y, n)
    v.require_choice(fn, "derivatives", derivatives, ("closed", "autodiff"))
    hessian_dtype = ingest.check_hessian_dtype(fn, hessian_dtype, X.dtype)
    w, it, status, gnorm, separated = _fit_binary(
        X, labels.astype(X.dtype), jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
        jnp.asarray(max_iter, jnp.int32), fit_intercept=fit_intercept,
        hessian_dtype=jnp.dtype(hessian_dtype).name, derivatives=derivatives)
    status, it = int(status), int(it)
    if status == NON_FINITE:
        ingest.raise_non_finite(fn, X, hessian_dtype)
    _raise_on_failure(fn, status, it, l2)
    _raise_if_separable(fn, bool(separated), l2)
    coef, intercept = w[:d], (w[d] if fit_intercept else jnp.zeros((), w.dtype))
    return NewtonResult(coef, intercept, it, status == CONVERGED, float(gnorm))


def fit_multinomial_newton(X, labels, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8,
                           max_iter: int = 50, n_classes: int | None = None,
                           derivatives: str = "closed") -> NewtonResult:
    """Multinomial ridge logistic regression by Newton's method on the closed-form gradient and Hessian.

    Minimises

    .. math::

       J(\\Theta, b) = -\\sum_i y_i^T\\log s(\\Theta^Tx_i + b) + \\frac{\\lambda}{2}\\Theta\\cdot\\Theta,

    with ``Y`` the one-hot labels, the ``(d+1)k``-dimensional Newton system of
    :func:`~mdc_jax.rules.logistic.multinomial_hessian` solved by Cholesky after fixing the last
    class's intercept (see :mod:`~mdc_jax.solvers.objectives`), and the result centred. Equals scikit-learn's
    multinomial ``LogisticRegression(C=1/l2)``, whose ``coef_`` is ``coef.T``.

    Not traceable, as :func:`fit_logistic_newton`: call it outside ``jax.jit``.

    Args:
      X: ``(n, d)`` finite observations, samples as rows, in the dtypes :func:`fit_logistic_newton`
        takes (float16 and bfloat16 are computed in float32).
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
    ingest.refuse_traced(fn, X, labels, l2, fit_intercept, tol, max_iter, n_classes)
    X = ingest.fit_input(fn, X)
    n, d = X.shape
    l2, tol, max_iter = ingest.check_options(fn, l2, tol, max_iter)
    fit_intercept = v.require_bool(fn, "fit_intercept", fit_intercept)
    v.require_choice(fn, "derivatives", derivatives, ("closed", "autodiff"))
    labels, k = ingest.multinomial_labels(fn, labels, n, n_classes)
    Phi, it, status, gnorm, separated = _fit_multinomial(
        X, labels.astype(np.int32), jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
        jnp.asarray(max_iter, jnp.int32), n_classes=k, fit_intercept=fit_intercept, fix_column=(l2 == 0),
        derivatives=derivatives)
    status, it = int(status), int(it)
    if status == NON_FINITE:
        ingest.raise_non_finite(fn, X)
    _raise_on_failure(fn, status, it, l2)
    _raise_if_separable(fn, bool(separated), l2)
    coef = Phi[:d]
    if l2 == 0:
        coef = coef - jnp.mean(coef, axis=1, keepdims=True)  # Σ_a Θ_ia = 0, the minimum-norm solution
    intercept = Phi[d] - jnp.mean(Phi[d]) if fit_intercept else jnp.zeros(k, Phi.dtype)
    return NewtonResult(coef, intercept, it, status == CONVERGED, float(gnorm))


def _check_predict(fn, fit, X, ndim):
    """X in the fit's dtype; shape checks only on a traced X (so that predictions run under jit)."""
    if not isinstance(fit, NewtonResult):
        maker = "fit_logistic_newton" if ndim == 1 else "fit_multinomial_newton"
        v.fail(fn, f"fit must be a NewtonResult (what {maker} returns); got {type(fit).__name__}.")
    coef = fit.coef
    if jnp.ndim(coef) != ndim:
        other = "predict_proba_multinomial" if ndim == 1 else "predict_proba_logistic"
        v.fail(fn, f"fit.coef has shape {jnp.shape(coef)}; expected {ndim}-D. Use {other} for it.")
    if isinstance(X, jax.core.Tracer):
        ingest.check_X_shape(fn, tuple(X.shape), X.dtype)  # its values are unknown under jit
    else:
        X = ingest.check_X(fn, X)
    if X.shape[1] != jnp.shape(coef)[0]:
        v.fail(fn, f"X has shape {tuple(X.shape)}; expected (n, {jnp.shape(coef)[0]}), the fit's features.")
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
