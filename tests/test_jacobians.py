"""Specification of the explicit Jacobians and the cross-entropy rule (seed 004 §2.1–2.3, §3.1)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from mdc_jax.reference import jacobians as ref
from mdc_jax.reference.softmax import sigmoid as ref_sigmoid
from mdc_jax.reference.softmax import softmax as ref_softmax
from mdc_jax.rules import jacobians as jac

from .helpers import F32_RTOL, F64_RTOL, assert_close, rel_err, uniform

dtypes = st.sampled_from([jnp.float64, jnp.float32])
seeds = st.integers(0, 2**31 - 1)
# Shapes come from short lists: every new (shape, dtype) costs a compilation (~0.3 s), and values,
# which hypothesis varies freely, cost nothing once compiled.
lengths = st.sampled_from([1, 2, 5])
matrix_shapes = st.sampled_from([(1, 1), (1, 4), (3, 2), (4, 5)])


def _rtol(dtype):
    return F64_RTOL if dtype == jnp.float64 else F32_RTOL


# One jitted comparison per (function, options), reused across hypothesis examples of equal shape.
@functools.cache
def _softmax_pair(axis):
    """x ↦ (blocks, full block-diagonal matrix, jax.jacobian of the reference)."""
    def both(x):
        J = jax.jacobian(lambda a: ref_softmax(a, axis=axis))(x)
        return jac.softmax_jacobian(x, axis), jac.softmax_jacobian(x, axis, block_diagonal=True), J
    return jax.jit(both)


@functools.cache
def _sigmoid_pair():
    return jax.jit(lambda x: (jac.sigmoid_jacobian(x), jac.sigmoid_jacobian(x, block_diagonal=True),
                              jax.jacobian(ref_sigmoid)(x)))


# ---------------------------------------------------------------------------------------------
# Softmax and sigmoid Jacobians against jax.jacobian


@given(lengths, seeds, dtypes)
def test_softmax_jacobian_of_a_vector_is_diag_s_minus_ssT(k, seed, dtype):
    """eq. 2.10, against jax.jacobian of the reference softmax."""
    x = uniform(seed, (k,), dtype, 4.0)
    J, _, J_ref = _softmax_pair(-1)(x)
    assert J.shape == (k, k) and J.dtype == dtype
    assert_close(J, J_ref, _rtol(dtype), "softmax Jacobian")
    np.testing.assert_allclose(J, J.T, rtol=0, atol=0)  # symmetric, so it is also the gradient


def _check_batched_softmax(x, axis, rtol):
    """axis=-1: samples are rows, x is (n, k), flattening row-major. axis=0: the seed's layout,
    x is (k, n) with samples as columns, flattening column-major (vec), as in eq. 2.13."""
    blocks, full, J = _softmax_pair(axis)(x)
    # J[i, a, j, b] = ∂s[i, a] / ∂x[j, b] with i, j samples: mdc_jax's layout
    J = J if axis == -1 else jnp.transpose(J, (1, 0, 3, 2))
    n, k = J.shape[:2]
    assert blocks.shape == (n, k, k) and full.shape == (n * k, n * k)
    assert_close(blocks, J[jnp.arange(n), :, jnp.arange(n), :], rtol, "per-sample blocks")
    assert_close(full, J.reshape(n * k, n * k), rtol, "eq. 2.13 block-diagonal matrix")


@given(matrix_shapes, seeds, dtypes)
def test_batched_softmax_jacobian_blocks_and_block_diagonal_match_jax_jacobian(shape, seed, dtype):
    """Per-sample blocks (n, k, k) by default; the full block-diagonal matrix on request."""
    _check_batched_softmax(uniform(seed, shape, dtype, 4.0), -1, _rtol(dtype))


def test_columnwise_softmax_jacobian_is_eq_2_13_in_the_seeds_layout():
    """Samples as columns (x is k × n) and column-major vec: eq. 2.13 exactly as the seed writes it."""
    x = uniform(5, (3, 4), jnp.float64, 4.0)
    _check_batched_softmax(x, 0, F64_RTOL)
    _, full, _ = _softmax_pair(0)(x)
    s = jax.nn.softmax(x, axis=0).T.reshape(-1)  # vec σ(X): column-major
    mask = jnp.kron(jnp.eye(4), jnp.ones((3, 3)))  # I_n ⊗ 11ᵀ
    assert_close(full, jnp.diag(s) - mask * (s[:, None] * s[None, :]), F64_RTOL, "eq. 2.13 literally")


@given(matrix_shapes, seeds, dtypes)
def test_sigmoid_jacobian_is_diag_sigma_one_minus_sigma(nk, seed, dtype):
    """eq. 2.4 for a vector, and per-row diagonal blocks (or the full diagonal) for a matrix."""
    n, k = nk
    x = uniform(seed, (n, k), dtype, 6.0)
    J_vec, _, J_vec_ref = _sigmoid_pair()(x[0])
    assert_close(J_vec, J_vec_ref, _rtol(dtype), "vector")
    blocks, full, J = _sigmoid_pair()(x)
    assert_close(blocks, J[jnp.arange(n), :, jnp.arange(n), :], _rtol(dtype), "blocks")
    assert_close(full, J.reshape(n * k, n * k), _rtol(dtype), "full diagonal")


def test_softmax_jacobian_is_differentiable_and_vmaps():
    """Its derivative (the softmax's second derivative) and vmap agree with autodiff."""
    x = uniform(3, (4, 5), jnp.float64, 2.0)
    W = uniform(4, (5, 5), jnp.float64)
    rule = lambda a: jnp.sum(W * jac.softmax_jacobian(a))
    reference = lambda a: jnp.sum(W * jax.jacobian(ref_softmax)(a))
    both = jax.jit(lambda a: (jax.vmap(jax.grad(rule))(a), jax.vmap(jax.grad(reference))(a),
                              jax.vmap(jac.softmax_jacobian)(a), jac.softmax_jacobian(a)))
    g, g_ref, per_row, batched = both(x)
    assert_close(g, g_ref, F64_RTOL, "grad of the Jacobian")
    assert_close(per_row, batched, F64_RTOL, "vmap over rows")


def test_softmax_jacobian_rows_sum_to_zero_for_large_logits():
    """Σ_a ∂s_a/∂x_b = 0 (probabilities sum to one), finite at logits of ±1e4."""
    x = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -1e4]], jnp.float32)
    blocks = jac.softmax_jacobian(x)
    np.testing.assert_allclose(jnp.sum(blocks, axis=1), 0.0, atol=1e-6)
    expected = jax.vmap(jax.jacobian(ref_softmax))(x.astype(jnp.float64))  # float64 autodiff, row by row
    assert_close(blocks, expected, F32_RTOL, "softmax Jacobian at ±1e4 vs float64", atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Cross-entropy


@functools.cache
def _cross_entropy_pair():
    grads = lambda f: jax.value_and_grad(f, argnums=(0, 1))
    return jax.jit(lambda p, q: (grads(jac.cross_entropy)(p, q), grads(ref.cross_entropy)(p, q)))


@given(st.sampled_from([(1,), (4,), (3, 5)]), seeds, dtypes)
def test_cross_entropy_value_and_gradients_match_autodiff(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    p, q = np.exp(rng.uniform(-3, 3, (2, *shape)))  # positive; rows normalised to probabilities
    p, q = (jnp.asarray(a / a.sum(axis=-1, keepdims=True), dtype) for a in (p, q))
    (H, (dp, dq)), (H_ref, (dp_ref, dq_ref)) = _cross_entropy_pair()(p, q)
    rtol = _rtol(dtype)
    assert_close(H, H_ref, rtol, "H")
    assert_close(dp, dp_ref, rtol, "∇_p H = −log q")
    assert_close(dq, dq_ref, rtol, "∇_q H = −p / q")
    assert dp.dtype == dtype and dq.dtype == dtype


def test_cross_entropy_keeps_the_minus_sign_the_seed_drops():
    """§3.1 writes H = p̂ᵀ log q̂; eq. 3.1 has the minus, so H(one-hot, uniform over 2) = ln 2 > 0."""
    p, q = jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5])
    np.testing.assert_allclose(jac.cross_entropy(p, q), np.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(jax.grad(jac.cross_entropy, argnums=1)(p, q), [-2.0, 0.0], rtol=1e-15)


def test_cross_entropy_finite_differences_and_grad_of_grad():
    p = jax.nn.softmax(uniform(0, (3, 4), jnp.float64, 2.0))
    q = jax.nn.softmax(uniform(1, (3, 4), jnp.float64, 2.0))
    check_grads(jax.jit(jac.cross_entropy), (p, q), order=2, modes=["rev"])
    hess = lambda f: jax.jit(jax.hessian(f, argnums=(0, 1)))(p, q)
    assert_close(hess(jac.cross_entropy), hess(ref.cross_entropy), 1e-9, "jax.hessian")


# ---------------------------------------------------------------------------------------------
# Bad input, and the comparison helper itself


def test_bad_input_raises_naming_argument_and_shapes():
    x3 = jnp.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"softmax_jacobian: x must be a vector \(k,\) or a matrix.*\(2, 3, 4\)"):
        jac.softmax_jacobian(x3)
    with pytest.raises(ValueError, match=r"sigmoid_jacobian: x must be a vector"):
        jax.jit(jac.sigmoid_jacobian)(jnp.zeros(()))
    with pytest.raises(ValueError, match=r"axis must be -1 .* or 0 .*; got 2"):
        jac.softmax_jacobian(jnp.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"x has dtype int32.*expected a floating dtype"):
        jac.softmax_jacobian(jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"cross_entropy: q has shape \(3,\); expected \(2, 3\)"):
        jac.cross_entropy(jnp.ones((2, 3)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"cross_entropy: p must have at least one axis"):
        jac.cross_entropy(jnp.float64(1.0), jnp.float64(1.0))
    x = jnp.zeros((2, 3))
    for axis in (True, np.bool_(False), 0.5, "0"):  # True == 1 must not pass as an axis
        with pytest.raises(ValueError, match=r"softmax_jacobian: axis must be -1 .* or 0 .*; got"):
            jac.softmax_jacobian(x, axis=axis)
    for fn in (jac.softmax_jacobian, jac.sigmoid_jacobian):
        for flag in (1, "yes", None, jnp.asarray(True)):
            with pytest.raises(ValueError, match=rf"{fn.__name__}: block_diagonal must be a bool \(True or False\); got"):
                fn(x, block_diagonal=flag)
    # no classes: refused by name, not NumPy's anonymous "zero-size array to reduction operation max"
    with pytest.raises(ValueError, match=r"softmax_jacobian: x has shape \(0,\), with no classes \(k = 0\)"):
        jac.softmax_jacobian(np.zeros(0))
    with pytest.raises(ValueError, match=r"softmax_jacobian: x has shape \(2, 0\), with no classes"):
        jax.jit(jac.softmax_jacobian)(jnp.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"softmax_jacobian: x has shape \(0, 2\), with no classes"):
        jac.softmax_jacobian(jnp.zeros((0, 2)), axis=0)


def test_softmax_jacobian_takes_numpy_integer_axes_and_bools():
    x = jnp.asarray([[1.0, 2.0], [0.5, -1.0], [0.0, 3.0]])
    expected = jac.softmax_jacobian(x, axis=0)
    for axis in (np.int64(0), np.int32(0), np.array(0)):
        assert_close(jac.softmax_jacobian(x, axis=axis), expected, 0.0, f"axis={axis!r}")
    assert_close(jac.softmax_jacobian(x, block_diagonal=np.True_), jac.softmax_jacobian(x, block_diagonal=True), 0.0, "np.True_")
    assert jac.sigmoid_jacobian(x, block_diagonal=np.bool_(True)).shape == (6, 6)


def test_cross_entropy_refuses_q_outside_its_domain_and_empty_input():
    """The docstring's contract: q > 0 (∇_q divides by q), checked when concrete; at least one entry."""
    p = jnp.asarray([[0.2, 0.8], [0.5, 0.5]])
    q = jnp.asarray([[0.3, 0.7], [0.6, 0.4]])
    for bad, what in [(q.at[1, 0].set(0.0), "value 0.0"), (q.at[1, 0].set(-0.5), "value -0.5"),
                      (q.at[1, 0].set(jnp.nan).at[1, 1].set(jnp.inf), "value nan")]:
        with pytest.raises(ValueError, match=rf"cross_entropy: q must hold finite entries > 0 .*q contains \d "
                                             rf"non-positive or non-finite value\(s\) \(first at row 1, column 0, {what}\)"):
            jac.cross_entropy(p, np.asarray(bad))
    for empty in (jnp.zeros(0), jnp.zeros((2, 0))):
        with pytest.raises(ValueError, match=r"cross_entropy: p has shape \((0,|2, 0)\), with no entries"):
            jac.cross_entropy(empty, empty)
    with pytest.raises(ValueError, match=r"cross_entropy: p has shape \(0,\), with no entries"):
        jax.jit(jac.cross_entropy)(jnp.zeros(0), jnp.zeros(0))
    assert jnp.isfinite(jax.jit(jac.cross_entropy)(p, q))  # under jit only shapes are checked


def test_nan_makes_the_comparison_fail():
    """A NaN gradient must never pass as 'close' (rel_err is inf, assert_close raises)."""
    good = jnp.array([1.0, 2.0])
    bad = jnp.array([1.0, jnp.nan])
    assert rel_err(bad, good) == float("inf") and rel_err(good, bad) == float("inf")
    with pytest.raises(AssertionError, match="max relative error inf"):
        assert_close(bad, good, 1.0, "NaN")
    # And q = 0 where p > 0 gives a non-finite ∇_q, which the comparison rejects.
    dq = jax.grad(jac.cross_entropy, argnums=1)(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
    assert rel_err(dq, jnp.array([-1.0, 0.0])) == float("inf")
