"""Specification of the softmax and sigmoid rules (seed 000 §4.3.5; seed 004 §2.2–2.3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import mdc_jax
from mdc_jax.reference.softmax import sigmoid as ref_sigmoid
from mdc_jax.reference.softmax import softmax as ref_softmax
from mdc_jax.rules import softmax as softmax_module
from mdc_jax.testing import assert_grads_match

from .helpers import F32_RTOL, F64_RTOL, assert_close, assert_runs_through_custom_rule, uniform

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3)


def _weighted(f):
    """``cᵀ f(x)``: its gradient in ``x`` is ``f``'s VJP with the cotangent ``c``."""
    return lambda x, c: jnp.sum(c * f(x))


@given(shapes, st.integers(0, 2**31 - 1), st.data(), st.sampled_from([jnp.float64, jnp.float32]))
def test_softmax_value_and_vjp_match_autodiff(shape, seed, data, dtype):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    A, cot = uniform(rng, shape, dtype, 5.0), uniform(rng, shape, dtype)
    rtol = F64_RTOL if dtype == jnp.float64 else F32_RTOL
    assert_close(mdc_jax.softmax(A, axis), ref_softmax(A, axis), rtol, "softmax value")
    # The VJP s ⊙ (g − sᵀg) and its dtype, against autodiff: a leaf judged as a whole, so the rounding of
    # the cancelling entries of a nearly one-hot s (of size eps·|g|) stays far below rtol.
    assert_grads_match(_weighted(lambda a: mdc_jax.softmax(a, axis)), _weighted(lambda a: ref_softmax(a, axis)),
                       (A, cot), argnums=0, rtol=rtol, what="softmax VJP")


@given(shapes, st.integers(0, 2**31 - 1), st.sampled_from([jnp.float64, jnp.float32]))
def test_sigmoid_value_and_vjp_match_autodiff(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x, cot = uniform(rng, shape, dtype, 8.0), uniform(rng, shape, dtype)
    rtol = F64_RTOL if dtype == jnp.float64 else F32_RTOL
    assert_close(mdc_jax.sigmoid(x), ref_sigmoid(x), rtol, "sigmoid value")
    assert_grads_match(_weighted(mdc_jax.sigmoid), _weighted(ref_sigmoid), (x, cot), argnums=0, rtol=rtol,
                       what="sigmoid VJP")


def test_softmax_vjp_applies_diag_s_minus_ssT():
    """The VJP equals the explicit Jacobian diag(s) − ssᵀ (§4.3.5) applied to the cotangent."""
    a = jnp.array([0.3, -1.2, 2.0, 0.0], jnp.float64)
    g = jnp.array([1.0, -2.0, 0.5, 3.0], jnp.float64)
    s = jax.nn.softmax(a)
    jac = jnp.diag(s) - jnp.outer(s, s)
    _, vjp = jax.vjp(mdc_jax.softmax, a)
    np.testing.assert_allclose(vjp(g)[0], jac @ g, rtol=1e-13, atol=1e-15)


def test_finite_differences_jit_vmap_and_grad_of_grad():
    A = uniform(0, (3, 4), jnp.float64, 2.0)
    check_grads(lambda a: mdc_jax.softmax(a, 0), (A,), order=2, modes=["rev"])
    check_grads(mdc_jax.sigmoid, (A,), order=2, modes=["rev"])
    weights = jnp.arange(12.0, dtype=jnp.float64).reshape(3, 4)
    loss = lambda f: (lambda a: jnp.sum(weights * f(a)))
    row_loss = lambda f: (lambda a: jnp.sum(weights[0] * f(a)))
    per_row = jax.vmap(jax.grad(row_loss(mdc_jax.softmax)))(A)
    per_row_ref = jax.vmap(jax.grad(row_loss(ref_softmax)))(A)
    assert_close(per_row, per_row_ref, F64_RTOL, "vmap")
    for rule, reference in [(mdc_jax.softmax, ref_softmax), (mdc_jax.sigmoid, ref_sigmoid)]:
        grad_of_grad = lambda f: jax.grad(lambda a: jnp.sum(jnp.sin(jax.grad(loss(f))(a))))(A)
        assert_close(grad_of_grad(rule), grad_of_grad(reference), 1e-9, "grad of grad")


def test_softmax_values_and_vjp_at_logits_of_1e4_match_float64():
    A = jnp.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1.0, -1e4]], jnp.float32)
    cot = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0], [2.0, -1.0, 4.0]], jnp.float32)
    s, vjp = jax.vjp(mdc_jax.softmax, A)
    s64, vjp64 = jax.vjp(ref_softmax, A.astype(jnp.float64))
    assert_close(s, s64, F32_RTOL, "softmax at ±1e4", atol=1e-7)
    assert_close(vjp(cot)[0], vjp64(cot.astype(jnp.float64))[0], F32_RTOL, "softmax VJP at ±1e4", atol=1e-6)
    np.testing.assert_allclose(jnp.sum(s, axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("fn, core", [(mdc_jax.softmax, softmax_module._softmax),
                                      (mdc_jax.sigmoid, softmax_module._sigmoid)])
def test_gradient_runs_through_the_custom_rules(fn, core, monkeypatch):
    assert_runs_through_custom_rule(core, lambda a: jnp.cos(fn(a)), (jnp.ones((2, 3), jnp.float64),), monkeypatch)


def test_bad_input():
    with pytest.raises(ValueError, match=r"softmax: axis must be an int in \[-2, 1\] for A of shape \(2, 3\); got 2"):
        mdc_jax.softmax(jnp.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"softmax: A has dtype int"):
        mdc_jax.softmax(jnp.arange(3))
    with pytest.raises(ValueError, match=r"at least one axis"):
        mdc_jax.softmax(jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"sigmoid: x has dtype int"):
        mdc_jax.sigmoid(jnp.arange(3))
    for axis in (True, np.bool_(False), 0.0, "0", np.array([0])):
        with pytest.raises(ValueError, match=r"softmax: axis must be an int in \[-2, 1\] for A of shape \(2, 3\)"):
            mdc_jax.softmax(jnp.ones((2, 3)), axis=axis)
    # no entries along the axis: refused by name, not NumPy's anonymous "zero-size array to reduction operation max"
    with pytest.raises(ValueError, match=r"softmax: A has shape \(2, 0\), with no entries along axis -1"):
        mdc_jax.softmax(np.zeros((2, 0)))
    with pytest.raises(ValueError, match=r"softmax: A has shape \(0, 3\), with no entries along axis 0"):
        jax.jit(mdc_jax.softmax, static_argnums=1)(jnp.zeros((0, 3)), 0)


def test_numpy_integer_axes_are_accepted():
    A = jnp.asarray([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    expected = mdc_jax.softmax(A, axis=0)
    for axis in (np.int64(0), np.int32(0), np.array(0), jnp.asarray(0), np.int64(-2)):
        assert_close(mdc_jax.softmax(A, axis=axis), expected, 0.0, f"axis={axis!r}")
