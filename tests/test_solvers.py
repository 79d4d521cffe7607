"""Specification of the Newton solvers: they equal scikit-learn's LogisticRegression(C = 1/λ)."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mdc_jax import solvers
from mdc_jax.kernels import gram_sizes
from mdc_jax.reference import logistic as ref
from mdc_jax.solvers import ingest
from mdc_jax.testing import count_traces, rel_err

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
        (solvers.fit_multinomial_newton, (X, y - 1), {}, r"n_classes \(max\(labels\) \+ 1\) must be an int >= 2; got 1"),
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
    with pytest.raises(ValueError, match=r"derivatives must be one of \('closed', 'autodiff'\); got 'fd'"):
        fit(X, y, derivatives="fd")


# ---------------------------------------------------------------------------------------------
# Drawn problems: scikit-learn and the autodiff path

SHAPE = (203, 9)  # the input-form, non-finite and autodiff tests share it: one compilation per fit
problem_shapes = st.sampled_from([(3, 1), SHAPE])  # a degenerate shape (one sample per class) and a moderate one
l2s = st.floats(0.05, 5.0)
FITS = [(solvers.fit_logistic_newton, 2), (solvers.fit_multinomial_newton, 3)]  # with k classes


def random_problem(seed, n, d, k=2):
    """Columns of different scales and offsets; labels ``0..k−1`` of a noisy linear model (classes
    overlap), each present."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d) + rng.normal(size=d)
    labels = np.argmax(X @ rng.normal(size=(d, k)) / np.sqrt(d) + 1.5 * rng.gumbel(size=(n, k)), axis=1)
    labels[:k] = np.arange(k)
    return X, labels


@given(problem_shapes, st.integers(0, 2**31 - 1), l2s, st.booleans())
def test_drawn_problems_equal_sklearn_newton_cholesky(shape, seed, l2, fit_intercept):
    """Binary coefficients to 1e-8 and multinomial probabilities to 1e-6, with and without intercept."""
    X, y = random_problem(seed, *shape, k=2)
    fit = solvers.fit_logistic_newton(X, y, l2=l2, fit_intercept=fit_intercept, tol=TIGHT)
    sk = sklearn_fit(X, y, l2, fit_intercept)
    assert fit.converged
    assert rel_err(fit.coef, sk.coef_[0]) <= 1e-8
    np.testing.assert_allclose(fit.intercept, sk.intercept_[0] if fit_intercept else 0.0, rtol=1e-8, atol=1e-10)
    X, labels = random_problem(seed, *shape, k=3)
    fit = solvers.fit_multinomial_newton(X, labels, l2=l2, fit_intercept=fit_intercept, tol=TIGHT)
    sk = sklearn_fit(X, labels, l2, fit_intercept)
    assert fit.converged
    np.testing.assert_allclose(solvers.predict_proba_multinomial(fit, X), sk.predict_proba(X), rtol=0, atol=1e-6)


def test_binary_fit_with_column_blocks_and_a_row_tail_equals_sklearn():
    """d > 160: the Hessian's Gram matrix by column blocks, and n not a multiple of the chunk height."""
    n, d = 1100, 170
    rows, block = gram_sizes(n, d)
    assert block < d and rows < n and n % rows != 0, "the case no longer exercises column blocks and a row tail"
    X, y = random_problem(6, n, d)
    fit = solvers.fit_logistic_newton(X, y, l2=1.0, tol=TIGHT)
    sk = sklearn_fit(X, y, 1.0)
    assert fit.converged
    assert rel_err(fit.coef, sk.coef_[0]) <= 1e-8
    np.testing.assert_allclose(fit.intercept, sk.intercept_[0], rtol=1e-8, atol=1e-10)


@given(st.integers(0, 2**31 - 1), l2s)
def test_autodiff_derivatives_equal_the_closed_form_on_drawn_problems(seed, l2):
    for fit_fn, k in FITS:
        X, labels = random_problem(seed, *SHAPE, k=k)
        closed = fit_fn(X, labels, l2=l2, tol=TIGHT)
        auto = fit_fn(X, labels, l2=l2, tol=TIGHT, derivatives="autodiff")
        assert closed.converged and auto.converged
        assert rel_err(auto.coef, closed.coef) <= 1e-9, fit_fn.__name__
        np.testing.assert_allclose(auto.intercept, closed.intercept, rtol=1e-9, atol=1e-12, err_msg=fit_fn.__name__)


# ---------------------------------------------------------------------------------------------
# Input forms: NumPy (aligned, misaligned, Fortran, strided, integer), lists and JAX arrays


def at_offset(shape, offset, dtype=np.float64):
    """An uninitialised C-order array whose data start ``offset`` bytes past a 64-byte boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + nbytes].view(dtype).reshape(shape)
    assert out.ctypes.data % 64 == offset % 64
    return out


def input_forms(X):
    """The same (integer-valued) matrix in every form a fit takes."""
    forms = {"C order": X.copy(), "Fortran order": np.asfortranarray(X), "int32": X.astype(np.int32),
             "list": X.tolist(), "JAX": jnp.asarray(X), "JAX int32": jnp.asarray(X.astype(np.int32))}
    for offset in (0, 8, 16):  # 64-byte aligned (aliased), and two misaligned views (copied once)
        forms[f"{offset} bytes past 64"] = at_offset(X.shape, offset)
        forms[f"{offset} bytes past 64"][...] = X
    wide = np.zeros((2 * X.shape[0], 2 * X.shape[1]))
    wide[::2, ::2] = X
    forms["non-contiguous slice"] = wide[::2, ::2]
    forms["read-only"] = X.copy()
    forms["read-only"].flags.writeable = False
    return forms


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("fit_fn, k", FITS, ids=["binary", "multinomial"])
def test_every_input_form_gives_the_same_fit_and_leaves_X_unchanged(fit_fn, k, fit_intercept):
    X, labels = random_problem(1, *SHAPE, k=k)
    X = np.round(2 * X)  # integer-valued: integer input is the same matrix
    expected = fit_fn(X, labels, l2=0.5, fit_intercept=fit_intercept, tol=TIGHT)
    assert expected.converged
    for name, form in input_forms(X).items():
        before = np.array(form, copy=True)
        fit = fit_fn(form, labels, l2=0.5, fit_intercept=fit_intercept, tol=TIGHT)
        assert fit.coef.dtype == np.float64, name
        assert rel_err(fit.coef, expected.coef) <= 1e-12, name
        np.testing.assert_allclose(fit.intercept, expected.intercept, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_array_equal(np.asarray(form), before, err_msg=f"{name}: the fit changed X")


def test_fit_input_aliases_aligned_c_order_numpy_and_copies_the_rest_into_aligned_buffers():
    if not ingest.CAN_ALIAS:
        pytest.skip("this JAX's device_put has no may_alias")
    X = np.round(2 * random_problem(2, *SHAPE)[0])
    for dtype in (np.float64, np.float32):
        A = at_offset(SHAPE, 0, dtype)
        A[...] = X
        J = ingest.fit_input("fit", A)
        assert J.dtype == dtype and J.unsafe_buffer_pointer() == A.ctypes.data, f"aligned {dtype.__name__}: copied"
    forms = input_forms(X)
    for name in ("C order", "8 bytes past 64", "16 bytes past 64", "Fortran order", "non-contiguous slice", "int32"):
        form = forms[name]
        J = ingest.fit_input("fit", form)
        assert J.dtype == np.float64 and J.unsafe_buffer_pointer() % 64 == 0, name
        if form.ctypes.data % 64 or not form.flags.c_contiguous or form.dtype != np.float64:
            assert J.unsafe_buffer_pointer() != form.ctypes.data, name
        np.testing.assert_array_equal(J, X, err_msg=name)


@pytest.mark.parametrize("fit_fn, k", FITS, ids=["binary", "multinomial"])
def test_half_precision_X_is_fitted_in_float32(fit_fn, k):
    """float16 and bfloat16 X, NumPy or JAX: XLA has no Cholesky for them (this ended in a
    NotImplementedError), so the fit computes in float32: the same fit as of X cast to float32."""
    X, labels = random_problem(7, *SHAPE, k=k)
    for dtype in (np.float16, jnp.bfloat16):
        half = X.astype(dtype)
        expected = fit_fn(half.astype(np.float32), labels, tol=1e-4)
        assert expected.converged
        for form in (half, jnp.asarray(half)):
            fit = fit_fn(form, labels, tol=1e-4)
            assert fit.coef.dtype == jnp.float32 and fit.converged, (dtype, type(form))
            np.testing.assert_array_equal(fit.coef, expected.coef)
            np.testing.assert_array_equal(fit.intercept, expected.intercept)
    predict = solvers.predict_proba_logistic if k == 2 else solvers.predict_proba_multinomial
    np.testing.assert_array_equal(predict(fit, half), predict(fit, half.astype(np.float32)))


def test_non_native_byte_order_X_is_accepted():
    """Big-endian float64 (from a file, say) is the same matrix: scikit-learn takes it."""
    X, y = random_problem(5, *SHAPE)
    expected = solvers.fit_logistic_newton(X, y, tol=TIGHT)
    fit = solvers.fit_logistic_newton(X.astype(X.dtype.newbyteorder()), y, tol=TIGHT)
    assert rel_err(fit.coef, expected.coef) <= 1e-12


# ---------------------------------------------------------------------------------------------
# Non-finite and overflowing X: found by the fit's first gradient, named on the host


@pytest.mark.parametrize("derivatives", ["closed", "autodiff"])
@pytest.mark.parametrize("fit_fn, k", FITS, ids=["binary", "multinomial"])
def test_non_finite_X_is_named_by_row_and_column(fit_fn, k, derivatives):
    X, labels = random_problem(3, *SHAPE, k=k)
    n, d = SHAPE
    fn = fit_fn.__name__
    for value, shown in [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")]:
        for row, col in [(17, 2), (n - 1, d - 1), (0, 0)]:
            bad = X.copy()
            bad[row, col] = value
            with pytest.raises(ValueError, match=rf"^{fn}: X contains 1 NaN or inf value\(s\) \(first at row {row}, "
                                                 rf"column {col}, value {shown}\); expected finite values\.$"):
                fit_fn(bad, labels, derivatives=derivatives)
    bad = X.copy()
    bad[40, 0], bad[17, 2], bad[17, 5] = np.inf, -np.inf, np.nan
    for form in (bad, jnp.asarray(bad)):  # NumPy and JAX input alike
        with pytest.raises(ValueError, match=rf"^{fn}: X contains 3 NaN or inf value\(s\) \(first at row 17, column 2, "
                                             rf"value -inf\)"):
            fit_fn(form, labels, derivatives=derivatives)


@pytest.mark.parametrize("derivatives", ["closed", "autodiff"])
@pytest.mark.parametrize("fit_fn, k", FITS, ids=["binary", "multinomial"])
def test_finite_X_whose_gradient_overflows_is_reported_as_too_large(fit_fn, k, derivatives):
    """A column of ±1e308 signed so that every term of Xᵀ(π − y) at the start has the same sign."""
    X, labels = random_problem(4, *SHAPE, k=k)
    X[:, 3] = np.where(labels == 0, 1e308, -1e308)
    with pytest.raises(ValueError, match=rf"^{fit_fn.__name__}: X's values are too large \(max \|x\| = 1e\+308\)") as info:
        fit_fn(X, labels, derivatives=derivatives)
    assert not isinstance(info.value, solvers.SingularHessianError)


@pytest.mark.parametrize("fit_fn, k", FITS, ids=["binary", "multinomial"])
def test_finite_X_whose_hessian_overflows_is_reported_as_too_large(fit_fn, k):
    """A column of size 1e200: the gradient at the start (~1e200) is finite, the Hessian (~1e400) is not.
    The error should say the values are too large, not blame duplicated or constant columns."""
    X, labels = random_problem(4, *SHAPE, k=k)
    X[:, 3] *= 1e200
    with pytest.raises(ValueError, match=r"too large"):
        fit_fn(X, labels)


# ---------------------------------------------------------------------------------------------
# One compiled program per shape and structure: the options are its arguments


@pytest.mark.parametrize("fit_fn, k, program", [(solvers.fit_logistic_newton, 2, "_fit_binary"),
                                                (solvers.fit_multinomial_newton, 3, "_fit_multinomial")],
                         ids=["binary", "multinomial"])
def test_a_new_l2_tol_or_max_iter_does_not_trace_the_fit_again(fit_fn, k, program):
    """l2, tol and max_iter are arguments of the compiled Newton loop, not constants in it. (l2 = 0 is a
    program of its own for the multinomial fit, which then also holds the reference column fixed.)"""
    X, labels = random_problem(8, 37, 4, k=k)  # a shape no other test uses: the first call traces
    with count_traces() as first:
        fit_fn(X, labels, l2=1.0, tol=1e-8, max_iter=50)
    assert first[program] == 1, dict(first)
    with count_traces() as again:
        for options in [dict(l2=2.5), dict(tol=1e-4), dict(max_iter=7), dict(l2=0.3, tol=1e-6, max_iter=3),
                        dict(l2=np.float32(0.5), tol=jnp.asarray(1e-5), max_iter=np.int64(4))]:
            fit_fn(X, labels, **options)
    assert again.get(program, 0) == 0, f"{program} traced again: {dict(again)}"
