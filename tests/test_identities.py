"""Specification of the matrix identities (seed 000 §4.4 and §5, eq. 33–36) against autodiff."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

from mdc_jax.reference import identities as ref
from mdc_jax.rules import identities as idn
from mdc_jax.testing import assert_tree_shapes_and_dtypes

from .helpers import F32_RTOL, F64_RTOL, assert_close

SCALAR = ["linear", "quadratic", "bilinear", "gram_quadratic", "trace_inverse_product", "trace", "det", "logdet"]
MATRIX = ["inverse", "outer_self"]
dtypes = st.sampled_from([jnp.float64, jnp.float32])
sizes = st.sampled_from([1, 3])  # each new (size, dtype) compiles once; values vary freely
seeds = st.integers(0, 2**31 - 1)


def _rtol(dtype):
    return F64_RTOL if dtype == jnp.float64 else F32_RTOL


def _square(rng, n):
    """Well-conditioned (diagonally dominant), with a negative determinant half the time."""
    X = 2 * n * np.eye(n) + rng.uniform(-1, 1, (n, n))
    X[0] *= rng.choice([-1.0, 1.0])
    return X


def arguments(seed, n, dtype):
    """Arguments for every identity: vectors of length n (or m = n), matrices m × p with p = n + 1."""
    rng = np.random.default_rng(seed)
    m, p = n, n + 1
    u = lambda *shape: rng.uniform(-1.5, 1.5, shape)
    args = {
        "linear": (u(n), u(n)),
        "quadratic": (u(n), u(n, n)),
        "bilinear": (u(m), u(m, p), u(p)),
        "gram_quadratic": (u(m), u(m, p)),
        "trace_inverse_product": (u(m, p), _square(rng, p), u(p, m)),
        "trace": (u(n, n),),
        "det": (_square(rng, n),),
        "logdet": (_square(rng, n),),
        "inverse": (_square(rng, n),),
        "outer_self": (u(n),),
    }
    cotangents = {"inverse": u(n, n), "outer_self": u(n, n)}
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)
    return cast(args), cast(cotangents)


@functools.cache
def _everything():
    """One jit: every identity's value and gradients (all arguments) or VJP, rule and reference."""

    def run(args, cotangents):
        out = {}
        for name in SCALAR:
            argnums = tuple(range(len(args[name])))
            vg = lambda f: jax.value_and_grad(f, argnums=argnums)(*args[name])
            out[name] = (vg(getattr(idn, name)), vg(getattr(ref, name)))
        for name in MATRIX:
            vjp = lambda f: (lambda y, pull: (y, pull(cotangents[name])))(*jax.vjp(f, *args[name]))
            out[name] = (vjp(getattr(idn, name)), vjp(getattr(ref, name)))
        return out

    return jax.jit(run)


@given(sizes, seeds, dtypes)
def test_every_identity_value_and_gradients_match_autodiff(n, seed, dtype):
    args, cotangents = arguments(seed, n, dtype)
    results = _everything()(args, cotangents)
    for name, ((value, grads), (ref_value, ref_grads)) in results.items():
        assert_close(value, ref_value, _rtol(dtype), f"{name} value")
        assert_close(grads, ref_grads, _rtol(dtype), f"{name} cotangents")
        assert_tree_shapes_and_dtypes(grads, args[name], what=f"{name} cotangents vs arguments")


# ---------------------------------------------------------------------------------------------
# The seed's formulas, entry by entry


def test_outer_self_jacobian_is_eq_36():
    """∂(xxᵀ)_ij/∂x_p = 2x_i (i=j=p), x_j (i=p≠j), x_i (i≠p=j), 0 otherwise."""
    x = jnp.array([0.5, -1.25, 2.0], jnp.float64)
    J = jax.jit(jax.jacrev(idn.outer_self))(x)
    expected = np.zeros((3, 3, 3))
    for i in range(3):
        for j in range(3):
            for p in range(3):
                if i == j == p:
                    expected[i, j, p] = 2 * x[i]
                elif i == p != j:
                    expected[i, j, p] = x[j]
                elif j == p != i:
                    expected[i, j, p] = x[i]
    np.testing.assert_array_equal(J, expected)


def test_closed_forms_of_section_5_and_4_4():
    rng = np.random.default_rng(0)
    a, b, x = (rng.uniform(-1, 1, 3) for _ in range(3))
    A, B, X = rng.uniform(-1, 1, (2, 3)), rng.uniform(-1, 1, (3, 2)), _square(rng, 3)
    M = rng.uniform(-1, 1, (3, 3))
    Xinv_T = np.linalg.inv(X).T  # expected values in NumPy: independent, and no eager compilations
    grads = jax.jit(lambda: (
        jax.grad(idn.linear, argnums=1)(a, x),                     # eq. 33: a
        jax.grad(idn.quadratic)(x, M),                             # (A + Aᵀ)x
        jax.grad(idn.bilinear, argnums=1)(a, M, b),                # abᵀ
        jax.grad(idn.gram_quadratic, argnums=1)(a, M),             # 2aaᵀX
        jax.grad(idn.trace_inverse_product, argnums=1)(A, X, B),   # eq. 34
        jax.grad(idn.trace)(M),                                    # I
        jax.grad(idn.det)(X),                                      # |X| X⁻ᵀ
        jax.grad(idn.logdet)(X),                                   # X⁻ᵀ
    ))()
    expected = (a, (M + M.T) @ x, np.outer(a, b), 2 * np.outer(a, a) @ M,
                -Xinv_T @ A.T @ B.T @ Xinv_T, np.eye(3), np.linalg.det(X) * Xinv_T, Xinv_T)
    for name, g, e in zip(SCALAR, grads, expected):
        assert_close(g, e, 1e-12, name)


def test_det_gradient_is_the_cofactor_matrix():
    """§4.4: ∂|X|/∂X_ij = C_ij, the cofactor; for 2 × 2, C = [[d, −c], [−b, a]]."""
    X = jnp.array([[3.0, 1.0], [-2.0, 5.0]], jnp.float64)
    np.testing.assert_allclose(jax.grad(idn.det)(X), [[5.0, 2.0], [-1.0, 3.0]], rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Transformations


@pytest.mark.parametrize("name", ["quadratic", "trace_inverse_product", "det", "logdet", "inverse", "outer_self"])
def test_finite_differences_float64(name):
    args, _ = arguments(4, 3, jnp.float64)
    fn = getattr(idn, name)
    check_grads(jax.jit(fn), args[name], order=1, modes=["rev"])


def test_grad_of_grad_matches_autodiff():
    """Reverse-over-reverse and jax.hessian (forward-over-reverse) through the closed-form VJPs."""
    args, _ = arguments(5, 3, jnp.float64)
    x, A = args["quadratic"]
    X = args["logdet"][0]
    run = jax.jit(lambda: (
        jax.jacrev(jax.grad(idn.quadratic))(x, A), jax.hessian(idn.quadratic)(x, A),
        jax.jacrev(jax.grad(idn.logdet))(X), jax.hessian(ref.logdet)(X),
        jax.hessian(lambda X: jnp.sum(idn.inverse(X) ** 2))(X), jax.hessian(lambda X: jnp.sum(ref.inverse(X) ** 2))(X),
        jax.hessian(lambda X: idn.trace_inverse_product(*args["trace_inverse_product"][:1], X,
                                                          *args["trace_inverse_product"][2:]))(args["trace_inverse_product"][1]),
        jax.hessian(lambda X: ref.trace_inverse_product(*args["trace_inverse_product"][:1], X,
                                                          *args["trace_inverse_product"][2:]))(args["trace_inverse_product"][1]),
    ))
    q_rr, q_fr, l_rr, l_ref, i_h, i_ref, t_h, t_ref = run()
    assert_close(q_rr, A + A.T, 1e-13, "∇²(xᵀAx) = A + Aᵀ by jacrev(grad)")
    assert_close(q_fr, A + A.T, 1e-13, "∇²(xᵀAx) by jax.hessian")
    assert_close(l_rr, l_ref, 1e-10, "∇² ln|X|")
    assert_close(i_h, i_ref, 1e-10, "∇² Σ(X⁻¹)²")
    assert_close(t_h, t_ref, 1e-10, "∇² tr(AX⁻¹B)")


def test_batched_gradients_under_vmap():
    rng = np.random.default_rng(6)
    Xs = np.stack([_square(rng, 3) for _ in range(4)])
    batched = jax.jit(jax.vmap(jax.grad(idn.det)))(jnp.asarray(Xs))
    expected = np.linalg.det(Xs)[:, None, None] * np.transpose(np.linalg.inv(Xs), (0, 2, 1))
    assert_close(batched, expected, 1e-12, "vmap of ∇|X|")


def test_every_identity_is_a_custom_vjp_rule():
    args, _ = arguments(0, 2, jnp.float64)
    for name in SCALAR + MATRIX:
        jaxpr = str(jax.make_jaxpr(getattr(idn, name))(*args[name]))
        assert "custom_vjp_call" in jaxpr, name


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_naming_argument_and_shapes():
    v3, v2, M = jnp.ones(3), jnp.ones(2), jnp.ones((3, 3))
    cases = [
        (idn.linear, (v3, v2), r"linear: x has shape \(2,\); expected \(3,\) \(the length of a\)"),
        (idn.quadratic, (v3, jnp.ones((3, 2))), r"quadratic: A has shape \(3, 2\); expected \(3, 3\)"),
        (idn.bilinear, (v2, M, v3), r"bilinear: X has shape \(3, 3\); expected \(2, 3\)"),
        (idn.bilinear, (v3, M, v2), r"bilinear: b has shape \(2,\); expected \(3,\) \(X's number of columns\)"),
        (idn.gram_quadratic, (v3, jnp.ones(3)), r"gram_quadratic: X must be 2-D"),
        (idn.trace_inverse_product, (jnp.ones((2, 3)), M, jnp.ones((3, 3))),
         r"B has shape \(3, 3\); expected \(3, 2\)"),
        (idn.trace_inverse_product, (jnp.ones((2, 2)), M, jnp.ones((3, 2))), r"A has shape \(2, 2\); expected \(2, 3\)"),
        (idn.trace, (jnp.ones((2, 3)),), r"trace: X must be square with shape \(n, n\); got shape \(2, 3\)"),
        (idn.inverse, (v3,), r"inverse: X must be 2-D"),
        (idn.det, (jnp.ones((2, 3)),), r"det: X must be square"),
        (idn.logdet, (jnp.ones((3, 3), jnp.int32),), r"logdet: X has dtype int32"),
        (idn.outer_self, (M,), r"outer_self: x must be 1-D with shape \(n,\); got shape \(3, 3\)"),
    ]
    for fn, args, match in cases:
        with pytest.raises(ValueError, match=match):
            fn(*args)
        with pytest.raises(ValueError, match=match):
            jax.jit(fn)(*args)
