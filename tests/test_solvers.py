"""Specification of the Newton solvers: they equal scikit-learn's LogisticRegression(C = 1/λ)."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mdc_jax import solvers
from mdc_jax.reference import logistic as ref
from mdc_jax.testing import rel_err

TIGHT = 1e-10  # our tol; scikit-learn gets 1e-12 below


@functools.cache
def _standardised(name):
    X, y = {"breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}[name](return_X_y=True)
    return StandardScaler().fit_transform(X), y


def standardised(name):
    """The data set with standardised columns: fresh copies, so a test may modify them."""
    X, y = _standardised(name)
    return X.copy(), y.copy()


def sklearn_fit(X, y, l2, fit_intercept=True, solver="newton-cholesky"):
    return LogisticRegression(C=1 / l2, solver=solver, tol=1e-12, max_iter=1000,
                              fit_intercept=fit_intercept).fit(X, y)


# ---------------------------------------------------------------------------------------------
# Agreement with scikit-learn


@pytest.mark.parametrize("l2, fit_intercept", [(1.0, True), (0.05, True), (1.0, False)])
def test_binary_coefficients_equal_sklearn_on_breast_cancer(l2, fit_intercept):
    X, y = standardised("breast_cancer")
    fit = solvers.fit_logistic_newton(X, y, l2=l2, fit_intercept=fit_intercept, tol=TIGHT)
    sk = sklearn_fit(X, y, l2, fit_intercept)
    assert fit.converged and 0 < fit.n_iter < 50 and fit.grad_norm <= TIGHT
    assert rel_err(fit.coef, sk.coef_[0]) <= 1e-6
    np.testing.assert_allclose(fit.intercept, sk.intercept_[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(solvers.predict_proba_logistic(fit, X), sk.predict_proba(X)[:, 1], rtol=0, atol=1e-6)


def test_float32_hessian_reaches_the_same_float64_solution():
    """Inexact Newton: the Gram matrix in float32, gradient and convergence test in float64."""
    X, y = standardised("breast_cancer")
    fit = solvers.fit_logistic_newton(X, y, l2=0.05, tol=TIGHT, hessian_dtype="float32")
    sk = sklearn_fit(X, y, 0.05)
    assert fit.converged and fit.coef.dtype == np.float64 and fit.grad_norm <= TIGHT
    assert rel_err(fit.coef, sk.coef_[0]) <= 1e-6
    with pytest.raises(ValueError, match=r"hessian_dtype must be None \(X's dtype\), 'float32' or 'float64'; got 'int32'"):
        solvers.fit_logistic_newton(X, y, hessian_dtype="int32")


@pytest.mark.parametrize("name", ["wine", "iris"])
def test_multinomial_probabilities_equal_sklearn(name):
    X, y = standardised(name)
    fit = solvers.fit_multinomial_newton(X, y, l2=1.0, tol=TIGHT)
    sk = sklearn_fit(X, y, 1.0)
    assert fit.converged and fit.grad_norm <= TIGHT
    np.testing.assert_allclose(solvers.predict_proba_multinomial(fit, X), sk.predict_proba(X), rtol=0, atol=1e-6)
    assert rel_err(fit.coef, sk.coef_.T) <= 1e-6  # scikit-learn's coef_ is (k, d)
    np.testing.assert_allclose(fit.intercept, sk.intercept_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(fit.intercept), 0.0, atol=1e-12)  # centred, as sklearn's


def test_multinomial_without_intercept_equals_sklearn_lbfgs():
    X, y = standardised("iris")
    fit = solvers.fit_multinomial_newton(X, y, l2=0.5, fit_intercept=False, tol=TIGHT)
    sk = sklearn_fit(X, y, 0.5, fit_intercept=False, solver="lbfgs")
    np.testing.assert_allclose(solvers.predict_proba_multinomial(fit, X), sk.predict_proba(X), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fit.intercept, np.zeros(3))


def test_unpenalised_multinomial_fit_is_a_stationary_point_and_centred():
    """λ = 0 fixes the reference column during the iterations; the answer is centred afterwards."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    labels = np.argmax(X @ rng.normal(size=(3, 3)) + 2.0 * rng.gumbel(size=(120, 3)), axis=1)  # noisy: overlap
    fit = solvers.fit_multinomial_newton(X, labels, l2=0.0, tol=TIGHT)
    assert fit.converged
    np.testing.assert_allclose(jnp.sum(fit.coef, axis=1), 0.0, atol=1e-12)
    Xa, Y = np.c_[X, np.ones(120)], np.eye(3)[labels]
    grad = jax.grad(ref.multinomial_loss)(jnp.vstack([fit.coef, fit.intercept[None, :]]), Xa, Y)
    assert float(jnp.max(jnp.abs(grad))) / 120 <= 1e-9


def test_the_solution_is_a_stationary_point_of_the_reference_objective():
    """Independent of scikit-learn: jax.grad of the reference objective vanishes at the fit."""
    X, y = standardised("breast_cancer")
    fit = solvers.fit_logistic_newton(X, y, l2=1.0, tol=TIGHT)
    Xa, w = np.c_[X, np.ones(len(y))], jnp.append(fit.coef, fit.intercept)
    objective = lambda w: ref.logistic_loss(w, Xa, y.astype(float), 0.0) + 0.5 * jnp.sum(w[:-1] ** 2)  # b unpenalised
    g = jax.jit(jax.grad(objective))(w)
    assert float(jnp.max(jnp.abs(g))) / len(y) <= 1e-9


def test_float32_input_stays_float32_and_is_close_to_float64():
    X, y = standardised("breast_cancer")
    fit32 = solvers.fit_logistic_newton(X.astype(np.float32), y, l2=1.0, tol=1e-5)
    fit64 = solvers.fit_logistic_newton(X, y, l2=1.0, tol=TIGHT)
    assert fit32.coef.dtype == jnp.float32
    assert rel_err(fit32.coef, fit64.coef) <= 1e-3


def test_max_iter_stops_early_and_reports_not_converged():
    X, y = standardised("breast_cancer")
    fit = solvers.fit_logistic_newton(X, y, l2=1.0, tol=TIGHT, max_iter=1)
    assert fit.n_iter == 1 and not fit.converged and fit.grad_norm > TIGHT
    assert np.all(np.isfinite(fit.coef))


# ---------------------------------------------------------------------------------------------
# Singular Hessians


def test_duplicated_column_without_ridge_raises_singular_hessian():
    X, y = standardised("breast_cancer")
    X = np.c_[X[:, :4], X[:, :1]]
    with pytest.raises(solvers.SingularHessianError, match=r"Hessian became singular.*l2 > 0.*duplicated"):
        solvers.fit_logistic_newton(X, y, l2=0.0)
    with pytest.raises(ValueError, match=r"singular"):  # a ValueError too
        solvers.fit_multinomial_newton(X, y, l2=0.0)


def test_duplicated_column_with_ridge_splits_the_weight_equally():
    X, y = standardised("breast_cancer")
    fit = solvers.fit_logistic_newton(np.c_[X[:, :4], X[:, :1]], y, l2=1.0, tol=TIGHT)
    assert fit.converged
    np.testing.assert_allclose(fit.coef[0], fit.coef[4], rtol=1e-9)


def test_separable_data_without_ridge_raises_instead_of_diverging():
    X = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(solvers.SingularHessianError, match=r"linearly separable.*l2 > 0|singular"):
        solvers.fit_logistic_newton(X, y, l2=0.0)
    with pytest.raises(solvers.SingularHessianError, match=r"linearly separable.*l2 > 0|singular"):
        solvers.fit_multinomial_newton(X, y, l2=0.0)
    fit = solvers.fit_logistic_newton(X, y, l2=0.1)  # with a ridge there is a unique, finite answer
    assert fit.converged and np.all(np.isfinite(fit.coef))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_naming_the_argument():
    X, y = standardised("iris")
    X, y = X[:20], np.r_[np.zeros(10, int), np.ones(10, int)]
    bad_X = X.copy()
    bad_X[3, 2] = np.nan
    cases = [
        (solvers.fit_logistic_newton, (X, np.r_[y[:-1], 2]), {}, r"y must hold labels in \{0, 1\}; got value\(s\) \[2\]"),
        (solvers.fit_logistic_newton, (bad_X, y), {}, r"X contains 1 NaN or inf.*row 3, column 2"),
        (solvers.fit_logistic_newton, (X, y[:-1]), {}, r"y has shape \(19,\); expected \(20,\)"),
        (solvers.fit_logistic_newton, (X[:, 0], y), {}, r"X must be 2-D with shape \(n, d\).*got shape \(20,\)"),
        (solvers.fit_logistic_newton, (X, np.zeros(20)), {}, r"y contains only the class 0"),
        (solvers.fit_logistic_newton, (X, y + 0.5), {}, r"y must hold integer labels.*non-integer"),
        (solvers.fit_logistic_newton, (X, y), {"l2": -1.0}, r"l2 must be a finite number >= 0; got -1.0"),
        (solvers.fit_logistic_newton, (X, y), {"tol": 0.0}, r"tol must be a finite number > 0"),
        (solvers.fit_logistic_newton, (X, y), {"max_iter": 0}, r"max_iter must be an int >= 1"),
        (solvers.fit_multinomial_newton, (X, np.r_[y[:-1], 3]), {"n_classes": 3},
         r"labels must lie in 0\.\.2; got value\(s\) \[3\]"),
        (solvers.fit_multinomial_newton, (X, np.r_[y[:-1], -1]), {}, r"labels must lie in 0\.\.1; got value\(s\) \[-1\]"),
        (solvers.fit_multinomial_newton, (X, np.r_[y[:-1], 3]), {}, r"no sample of class\(es\) \[2\]"),
        (solvers.fit_multinomial_newton, (X, np.ones_like(y)), {},
         r"only one class is present in labels \(every label is 1\); a multinomial fit needs at least two"),
        (solvers.fit_multinomial_newton, (bad_X, y), {}, r"X contains 1 NaN or inf"),
        (solvers.fit_multinomial_newton, (X, y[:5]), {}, r"labels has shape \(5,\); expected \(20,\)"),
        (solvers.fit_multinomial_newton, (X, np.zeros(20, int)), {}, r"only one class is present in labels"),
        (solvers.fit_multinomial_newton, (X, y), {"n_classes": 1}, r"n_classes must be an int >= 2; got 1"),
        (solvers.fit_multinomial_newton, (X, y), {"n_classes": 2.0}, r"n_classes must be an int >= 2; got 2\.0"),
        (solvers.fit_multinomial_newton, (X, y), {"n_classes": np.array([2])}, r"n_classes must be an int >= 2"),
        (solvers.fit_logistic_newton, (X, y), {"max_iter": 2**40}, r"max_iter must be at most 2\*\*31 - 1 = 2147483647"),
        (solvers.fit_multinomial_newton, (X, y), {"max_iter": np.int64(2**31)}, r"max_iter must be at most 2\*\*31 - 1"),
        (solvers.fit_logistic_newton, (X, y), {"max_iter": 5.0}, r"max_iter must be an int >= 1; got 5\.0"),
        (solvers.fit_logistic_newton, (X, y), {"max_iter": True}, r"max_iter must be an int >= 1; got True"),
        (solvers.fit_logistic_newton, (X, y), {"l2": True}, r"l2 must be a finite number >= 0; got True"),
        (solvers.fit_logistic_newton, (X, y), {"l2": np.ones(2)}, r"l2 must be a finite number >= 0"),
        (solvers.fit_logistic_newton, (X, y), {"tol": "1e-8"}, r"tol must be a finite number > 0; got '1e-8'"),
        (solvers.fit_multinomial_newton, (X, y), {"tol": np.array(np.nan)}, r"tol must be a finite number > 0"),
        (solvers.fit_logistic_newton, (X, y), {"fit_intercept": "no"}, r"fit_intercept must be a bool .*; got 'no'"),
        (solvers.fit_multinomial_newton, (X, y), {"fit_intercept": 1}, r"fit_intercept must be a bool .*; got 1"),
        (solvers.fit_logistic_newton, (X, y), {"hessian_dtype": "nope"},
         r"hessian_dtype must be None \(X's dtype\), 'float32' or 'float64'; got 'nope'"),
        (solvers.fit_logistic_newton, (X, y), {"hessian_dtype": "int32"}, r"hessian_dtype must be None"),
        (solvers.fit_logistic_newton, (X, y), {"hessian_dtype": True}, r"hessian_dtype must be None"),
        (solvers.fit_logistic_newton, ([[1.0, 2.0], [3.0]], [0, 1]), {},
         r"fit_logistic_newton: X must be an \(n, d\) array-like of numbers.*NumPy cannot make an array of it"),
        (solvers.fit_multinomial_newton, (X[:3], [0, [1], 1]), {}, r"fit_multinomial_newton: labels must be an \(n,\) array"),
    ]
    for fn, args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            fn(*args, **kwargs)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"X contains 1 NaN or inf.*value inf"):
        solvers.fit_logistic_newton(X, y)


def test_options_accept_numpy_scalars_and_0d_arrays():
    """l2, tol, max_iter and n_classes as NumPy scalars or 0-d arrays (NumPy or JAX), as Python numbers are."""
    X, y = standardised("iris")
    X, y = X[:20], np.r_[np.zeros(10, int), np.ones(10, int)]
    expected = solvers.fit_logistic_newton(X, y, l2=1.0, tol=1.0, max_iter=3)
    for options in [dict(l2=np.array(1.0), tol=np.int64(1), max_iter=np.array(3)),
                    dict(l2=jnp.asarray(1.0), tol=jnp.asarray(1), max_iter=jnp.asarray(3), fit_intercept=np.True_),
                    dict(l2=np.float32(1.0), tol=np.array(1), max_iter=np.int32(3), hessian_dtype=np.float64)]:
        fit = solvers.fit_logistic_newton(X, y, **options)
        assert rel_err(fit.coef, expected.coef) == 0.0 and fit.n_iter == expected.n_iter, options
    labels = np.r_[np.zeros(7, int), np.ones(7, int), np.full(6, 2)]
    expected = solvers.fit_multinomial_newton(X, labels, tol=1.0, max_iter=3, n_classes=3)
    fit = solvers.fit_multinomial_newton(X, labels, l2=np.int64(1), tol=jnp.asarray(1.0), max_iter=np.array(3),
                                         n_classes=np.array(3), fit_intercept=np.bool_(True))
    assert rel_err(fit.coef, expected.coef) == 0.0


def test_fits_refuse_tracers_and_predictions_run_under_jit():
    X, y = standardised("iris")
    X, y = X[:20], np.r_[np.zeros(10, int), np.ones(10, int)]
    for fit_fn in (solvers.fit_logistic_newton, solvers.fit_multinomial_newton):
        with pytest.raises(ValueError, match=rf"{fit_fn.__name__}: got a traced argument .*runs its own compiled Newton "
                                             r"loop, so call it outside jit"):
            jax.jit(fit_fn)(X, y)
    with pytest.raises(ValueError, match=r"fit_logistic_newton: got a traced argument"):
        jax.jit(lambda l2: solvers.fit_logistic_newton(X, y, l2=l2))(1.0)
    binary = solvers.NewtonResult(jnp.asarray([0.5, -1.0, 0.25, 2.0]), jnp.asarray(0.1), 1, True, 0.0)
    multi = solvers.NewtonResult(jnp.arange(12.0).reshape(4, 3) / 10, jnp.zeros(3), 1, True, 0.0)
    for predict, fit in [(solvers.predict_proba_logistic, binary), (solvers.predict_proba_multinomial, multi)]:
        np.testing.assert_allclose(jax.jit(predict)(fit, X), predict(fit, X), rtol=1e-14)
        with pytest.raises(ValueError, match=rf"{predict.__name__}: X has shape \(20, 3\); expected \(n, 4\)"):
            jax.jit(predict)(fit, X[:, :3])
        with pytest.raises(ValueError, match=rf"{predict.__name__}: X must be 2-D"):
            jax.jit(predict)(fit, X[0])
        with pytest.raises(ValueError, match=rf"{predict.__name__}: fit must be a NewtonResult \(what fit_\w+_newton "
                                             r"returns\); got tuple"):
            predict(tuple(fit), X)


def test_predict_proba_checks_the_fit_and_the_features():
    X, _y = standardised("iris")
    fit = solvers.NewtonResult(jnp.zeros(4), jnp.zeros(()), 0, True, 0.0)
    with pytest.raises(ValueError, match=r"X has shape \(150, 3\); expected \(n, 4\)"):
        solvers.predict_proba_logistic(fit, X[:, :3])
    with pytest.raises(ValueError, match=r"fit.coef has shape \(4,\); expected 2-D.*predict_proba_logistic"):
        solvers.predict_proba_multinomial(fit, X)
    np.testing.assert_array_equal(solvers.predict_proba_logistic(fit, X), np.full(150, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solvers.predict_proba_logistic(fit, X.astype(np.float32))


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_autodiff_derivatives_reach_the_same_solution(name):
    """derivatives="autodiff" (jax.grad / jax.hessian of the reference) is the same Newton method."""
    X, y = standardised(name)
    fit = solvers.fit_logistic_newton if name == "breast_cancer" else solvers.fit_multinomial_newton
    closed, auto = fit(X, y, l2=0.5, tol=TIGHT), fit(X, y, l2=0.5, tol=TIGHT, derivatives="autodiff")
    assert closed.converged and auto.converged and closed.n_iter == auto.n_iter
    assert rel_err(auto.coef, closed.coef) <= 1e-9
    with pytest.raises(ValueError, match="derivatives must be 'closed' or 'autodiff'; got 'fd'"):
        fit(X, y, derivatives="fd")
