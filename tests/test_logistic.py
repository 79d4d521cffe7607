"""Specification of the logistic-regression rules (seed 004 §3.2–3.3) against autodiff."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jax.test_util import check_grads

from mdc_jax import kernels
from mdc_jax.reference import logistic as ref
from mdc_jax.rules import logistic as lg
from mdc_jax.testing import assert_grads_match, assert_tree_shapes_and_dtypes

from .helpers import F32_RTOL, F64_RTOL, assert_close, assert_runs_through_custom_rule, probability_rows, uniform

ARGNUMS = (0, 1, 2, 3)  # θ, X, y, λ: every argument has a cotangent
dtypes = st.sampled_from([jnp.float64, jnp.float32])
seeds = st.integers(0, 2**31 - 1)
l2s = st.sampled_from([0.0, 0.3, 2.0])
# (n, d) and (n, d, k) from short lists: a new shape costs a compilation, new values do not.
binary_shapes = st.sampled_from([(1, 1), (7, 3), (12, 5)])
multinomial_shapes = st.sampled_from([(1, 1, 2), (6, 3, 3), (10, 4, 5)])


def _rtol(dtype):
    return F64_RTOL if dtype == jnp.float64 else F32_RTOL


def binary_case(seed, n, d, dtype, scale=1.5):
    return ref.logistic_case(seed, n, d, dtype, scale)


def multinomial_case(seed, n, d, k, dtype, one_hot=True):
    return ref.multinomial_case(seed, n, d, k, dtype, one_hot=one_hot)


def assert_loss_matches_autodiff(name, case, l2, rtol=None):
    """The rule's value and its gradients in θ, X, y and λ against jax.grad of the reference, under one
    jit; each gradient has its argument's shape and dtype."""
    l2 = jnp.asarray(l2, case[0].dtype)  # an array, so that its cotangent is compared too
    assert_grads_match(getattr(lg, name), getattr(ref, name), (*case, l2), argnums=ARGNUMS, rtol=rtol, what=name)


@functools.cache
def _hessian_pair(name):
    """The closed-form Hessian and jax.hessian of the reference, under one jit (assert_grads_match
    compares first derivatives only)."""
    rule_hessian = getattr(lg, name.replace("loss", "hessian"))
    return jax.jit(lambda *a: (rule_hessian(*a), jax.hessian(getattr(ref, name))(*a)))


@functools.cache
def _value_and_grads(name):
    return jax.jit(jax.value_and_grad(getattr(lg, name), argnums=ARGNUMS))


# ---------------------------------------------------------------------------------------------
# Binary: §3.2


@given(binary_shapes, seeds, l2s, dtypes)
def test_logistic_loss_value_and_all_gradients_match_autodiff(shape, seed, l2, dtype):
    """∇θ = Xᵀ(π − y) + λθ (eq. 3.9), ∇X = (π − y)θᵀ, ∇y = −Xθ, ∇λ = ½θᵀθ."""
    assert_loss_matches_autodiff("logistic_loss", binary_case(seed, *shape, dtype), l2, _rtol(dtype))


@given(binary_shapes, seeds, l2s, dtypes)
def test_logistic_hessian_matches_jax_hessian(shape, seed, l2, dtype):
    """Xᵀ diag(π(1 − π)) X + λI (eq. 3.14) against jax.hessian in θ."""
    theta, X, y = binary_case(seed, *shape, dtype)
    H, H_ref = _hessian_pair("logistic_loss")(theta, X, y, jnp.asarray(l2, dtype))
    assert_tree_shapes_and_dtypes(H, jax.ShapeDtypeStruct((shape[1], shape[1]), dtype), what="binary Hessian")
    assert_close(H, H_ref, _rtol(dtype), "binary Hessian")


def test_logistic_hessian_with_several_gram_blocks_matches_jax_hessian():
    """d > the block width: the upper-block-triangle Gram matrix and its mirror."""
    n, d = 40, 589
    assert kernels.gram_sizes(n, d)[1] < d, "the case no longer exercises several column blocks"
    theta, X, y = binary_case(0, n, d, jnp.float64, scale=0.2)
    H, H_ref = _hessian_pair("logistic_loss")(theta, X, y, jnp.float64(0.5))
    assert_close(H, H_ref, F64_RTOL, "blocked Hessian")
    np.testing.assert_array_equal(H, H.T)


@pytest.mark.parametrize("block", [1, 3, 7])
def test_weighted_gram_blocks_cover_every_entry_and_are_exactly_symmetric(block):
    rng = np.random.default_rng(1)
    X, w = uniform(rng, (9, 7), jnp.float64), uniform(rng, (9,), jnp.float64) + 1.0
    G = jax.jit(kernels.weighted_gram, static_argnames="block")(X, w, block=block)
    assert_close(G, X.T @ (w[:, None] * X), 1e-14, f"block={block}")
    np.testing.assert_array_equal(G, G.T)


def test_logistic_gradient_function_is_the_rules_backward():
    theta, X, y = binary_case(3, 9, 4, jnp.float64)
    g = jax.jit(lambda *a: (lg.logistic_gradient(*a), jax.grad(ref.logistic_loss)(*a)))(theta, X, y, 0.7)
    assert_close(*g, F64_RTOL, "logistic_gradient")


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_margins_of_1e4_give_finite_correct_gradients(dtype):
    """softplus form: the loss, gradient and Hessian stay finite at |xᵀθ| = 1e4."""
    X = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype)
    theta = jnp.array([1e4, -1e4], dtype)
    y = jnp.array([1.0, 0.0, 1.0, 0.0], dtype)  # margins +1e4 (right), −1e4 (wrong) alternately
    case = (theta, X, y)
    value, grads = _value_and_grads("logistic_loss")(*case, jnp.asarray(0.0, dtype))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in (value, *grads))
    np.testing.assert_allclose(value, 2e4, rtol=1e-6)  # two points wrong by 1e4 each, two right by ~0
    assert_loss_matches_autodiff("logistic_loss", case, 0.0, _rtol(dtype))
    np.testing.assert_allclose(grads[0], [0.0, -2.0], atol=1e-6)  # Xᵀ(π − y), π − y = (0, 0, −1, 1)
    H, H_ref = _hessian_pair("logistic_loss")(*case, jnp.asarray(0.0, dtype))
    assert bool(jnp.all(jnp.isfinite(H)))
    np.testing.assert_allclose(H, H_ref, atol=1e-30)  # π(1 − π) underflows to 0, as it should


# ---------------------------------------------------------------------------------------------
# Multinomial: §3.3


@given(multinomial_shapes, seeds, l2s, st.booleans(), dtypes)
def test_multinomial_loss_value_and_all_gradients_match_autodiff(shape, seed, l2, one_hot, dtype):
    """∇Θ = Xᵀ(Π − Y) + λΘ, ∇X = (Π − Y)Θᵀ, ∇Y = −log Π, ∇λ = ½Θ·Θ."""
    case = multinomial_case(seed, *shape, dtype, one_hot)
    assert_loss_matches_autodiff("multinomial_loss", case, l2, _rtol(dtype))


@given(multinomial_shapes, seeds, l2s, dtypes)
def test_multinomial_hessian_matches_jax_hessian_layout_and_values(shape, seed, l2, dtype):
    """H[i,a,j,b] = Σ_n x_ni x_nj (δ_ab π_na − π_na π_nb) + λ δ_ij δ_ab, in jax.hessian's layout."""
    Theta, X, Y = multinomial_case(seed, *shape, dtype)
    H, H_ref = _hessian_pair("multinomial_loss")(Theta, X, Y, jnp.asarray(l2, dtype))
    _n, d, k = shape
    assert_tree_shapes_and_dtypes(H, jax.ShapeDtypeStruct((d, k, d, k), dtype), what="multinomial Hessian")
    assert_close(H, H_ref, _rtol(dtype), "multinomial Hessian")


def test_multinomial_with_label_rows_not_summing_to_one_matches_autodiff():
    """Weighted rows (r = Y1 ≠ 1) keep the exact gradient and Hessian."""
    Theta, X, _ = multinomial_case(4, 6, 3, 4, jnp.float64)
    Y = uniform(np.random.default_rng(8), (6, 4), jnp.float64) + 1.0
    assert_loss_matches_autodiff("multinomial_loss", (Theta, X, Y), 0.4, F64_RTOL)
    H, H_ref = _hessian_pair("multinomial_loss")(Theta, X, Y, jnp.float64(0.4))
    assert_close(H, H_ref, F64_RTOL, "Hessian with r ≠ 1")


def test_multinomial_hessian_is_singular_along_the_class_shift_without_ridge():
    """Θ ↦ Θ + v1ᵀ leaves Π unchanged, so H(v ⊗ 1) = 0 at λ = 0 and = λ(v ⊗ 1) otherwise."""
    Theta, X, Y = multinomial_case(5, 8, 3, 4, jnp.float64)
    shift = jnp.ones((3, 4), jnp.float64) * jnp.array([1.0, -2.0, 0.5])[:, None]
    hvp = jax.jit(lambda l2: jnp.einsum("iajb,jb->ia", lg.multinomial_hessian(Theta, X, Y, l2), shift))
    for l2 in (0.0, 0.7):
        np.testing.assert_allclose(hvp(l2), l2 * shift, atol=1e-12)


def test_multinomial_with_two_classes_is_binary_logistic_on_the_logit_difference():
    """k = 2 with Θ = [0, θ] is the binary model: same loss, and ∇θ equals the binary gradient."""
    theta, X, y = binary_case(6, 10, 3, jnp.float64)
    Theta = jnp.stack([jnp.zeros_like(theta), theta], axis=1)
    Y = jnp.stack([1 - y, y], axis=1)
    run = jax.jit(lambda: (lg.multinomial_loss(Theta, X, Y), lg.logistic_loss(theta, X, y),
                           jax.grad(lg.multinomial_loss)(Theta, X, Y)[:, 1], jax.grad(lg.logistic_loss)(theta, X, y)))
    L_multi, L_binary, g_multi, g_binary = run()
    np.testing.assert_allclose(L_multi, L_binary, rtol=1e-13)
    np.testing.assert_allclose(g_multi, g_binary, rtol=1e-12)


def test_multinomial_logits_of_1e4_give_finite_correct_gradients():
    Theta = jnp.array([[1e4, -1e4, 0.0]], jnp.float32)
    X = jnp.array([[1.0], [-1.0]], jnp.float32)
    Y = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], jnp.float32)
    value, grads = _value_and_grads("multinomial_loss")(Theta, X, Y, jnp.float32(0.0))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in (value, *grads))
    assert_loss_matches_autodiff("multinomial_loss", (Theta, X, Y), 0.0, F32_RTOL)


# ---------------------------------------------------------------------------------------------
# The Hessians' kernels (mdc_jax.kernels): row_chunk_sum, weighted_gram and softmax_weighted_gram
# against dense references


@pytest.mark.parametrize("name", ["gram_sizes", "row_chunk_sum", "softmax_rows"])
def test_kernels_once_in_rules_logistic_still_import_with_a_warning_naming_their_home(name):
    """Before issue 20 the Gram kernels lived in rules/logistic.py (docs/newton.md named
    ``rules.logistic.gram_sizes``): the old names are mdc_jax.kernels', with a DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match=rf"use mdc_jax\.kernels\.{name}"):
        old = getattr(lg, name)
    assert old is getattr(kernels, name)
    with pytest.warns(DeprecationWarning, match=r"mdc_jax\.rules\.logistic\.row_chunk_sum is deprecated"):
        from mdc_jax.rules.logistic import row_chunk_sum  # noqa: F401
    with pytest.raises(AttributeError, match=r"has no attribute 'no_such_kernel'"):
        lg.no_such_kernel  # noqa: B018


def _dense_gram(X, w, ones=False):
    """``[X 1]ᵀ diag(w) [X 1]`` (or ``Xᵀ diag(w) X``) by NumPy, the reference."""
    X, w = np.asarray(X), np.asarray(w)
    Xa = np.c_[X, np.ones(len(X))] if ones else X
    return Xa.T @ (w[:, None] * Xa)


def _dense_softmax_gram(X, P, r=None, ones=False):
    """``Σ_n r_n x̃_n x̃_nᵀ ⊗ (diag π_n − π_n π_nᵀ)`` by one einsum over an ``n × k × k`` array."""
    X, P = np.asarray(X), np.asarray(P)
    Xa = np.c_[X, np.ones(len(X))] if ones else X
    r = np.ones(len(X)) if r is None else np.asarray(r)
    J = P[:, :, None] * np.eye(P.shape[1]) - P[:, :, None] * P[:, None, :]
    return np.einsum("ni,nab,nj->iajb", Xa * r[:, None], J, Xa)


@given(st.integers(1, 40), st.integers(1, 50))
@example(1, 7)  # rows > n = 1
@example(6, 6)  # rows == n: one chunk
@example(7, 3)  # n % rows != 0: the last chunk moved back by 2 rows
def test_row_chunk_sum_counts_every_row_exactly_once(n, rows):
    """The plain sum; ``valid`` is False on exactly the rows of the moved-back last chunk that an
    earlier chunk counted, and every row is visited."""
    rng = np.random.default_rng(n * 100 + rows)
    X = jnp.asarray(rng.uniform(-1, 1, (n, 3)))

    def part(Xc, ic, valid):
        return {"sum": jnp.sum(jnp.where(valid[:, None], Xc, 0), axis=0),
                "counted": jnp.zeros(n, jnp.int32).at[ic].add(valid.astype(jnp.int32)),
                "seen": jnp.zeros(n, jnp.int32).at[ic].add(1)}

    out = jax.jit(lambda X, index: kernels.row_chunk_sum(part, (X, index), rows))(X, jnp.arange(n))
    np.testing.assert_allclose(out["sum"], np.asarray(X).sum(axis=0), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(out["counted"], np.ones(n))
    height = min(rows, n)
    chunks = -(-n // height)
    seen_twice = np.arange(n - height, (chunks - 1) * height)  # the moved-back chunk's rows counted before
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(out["seen"]) == 2), seen_twice)
    assert np.asarray(out["seen"]).min() == 1 and int(jnp.sum(out["seen"])) == chunks * height


# (n, d, block, rows): block not dividing d, block == d, block > d, rows not dividing n, rows == n,
# rows > n, single rows and columns, one sample
_GRAM_CASES = [(13, 7, 3, 4), (13, 7, 7, 13), (13, 7, 10, 20), (12, 6, 4, 4), (1, 1, 1, 1), (1, 5, 2, 3), (4, 1, 3, 3)]


@pytest.mark.parametrize("ones", [False, True])
def test_weighted_gram_equals_dense_reference_for_explicit_blocks_and_rows(ones):
    rng = np.random.default_rng(11)
    gram = jax.jit(kernels.weighted_gram, static_argnames=("block", "rows", "ones"))
    for n, d, block, rows in _GRAM_CASES:
        X, w = uniform(rng, (n, d), jnp.float64, 2.0), uniform(rng, (n,), jnp.float64) + 1.0
        G = gram(X, w, block=block, rows=rows, ones=ones)
        assert G.shape == (d + ones, d + ones)
        assert_close(G, _dense_gram(X, w, ones), 1e-12, f"n={n}, d={d}, block={block}, rows={rows}, ones={ones}")
        np.testing.assert_array_equal(G, G.T)


@given(st.integers(1, 13), st.integers(1, 9), st.integers(1, 12), st.integers(1, 16), st.booleans(), seeds)
def test_weighted_gram_equals_dense_reference_for_drawn_blocks_and_rows(n, d, block, rows, ones, seed):
    rng = np.random.default_rng(seed)
    X, w = uniform(rng, (n, d), jnp.float64, 3.0), uniform(rng, (n,), jnp.float64) + 1.0
    G = jax.jit(lambda X, w: kernels.weighted_gram(X, w, block=block, rows=rows, ones=ones))(X, w)
    assert_close(G, _dense_gram(X, w, ones), 1e-12, f"n={n}, d={d}, block={block}, rows={rows}, ones={ones}")
    np.testing.assert_array_equal(G, G.T)


def test_weighted_gram_default_sizes_above_160_columns_use_column_blocks_and_a_row_tail():
    """At d > 160 the defaults take column blocks and row chunks; n = 1100 leaves a short last chunk."""
    n, d = 1100, 170
    rows, block = kernels.gram_sizes(n, d)
    assert block < d and rows < n and n % rows != 0, "the case no longer exercises blocks and a row tail"
    rng = np.random.default_rng(12)
    X, w = uniform(rng, (n, d), jnp.float64), uniform(rng, (n,), jnp.float64) + 1.0
    G, Ga = jax.jit(lambda X, w: (kernels.weighted_gram(X, w), kernels.weighted_gram(X, w, ones=True)))(X, w)
    assert_close(G, _dense_gram(X, w), 1e-12, "default sizes")
    assert_close(Ga, _dense_gram(X, w, ones=True), 1e-12, "default sizes, ones")
    np.testing.assert_array_equal(G, G.T)
    np.testing.assert_array_equal(Ga, Ga.T)
    np.testing.assert_array_equal(Ga[:d, :d], G)  # the intercept's row and column leave X's block alone


@pytest.mark.parametrize("ones", [False, True])
def test_weighted_gram_with_v_returns_the_product_from_the_same_pass(ones):
    """``v``: ``(G, vᵀX)`` (``vᵀ[X 1]`` with ``ones``), G unchanged, over row chunks with a tail."""
    rng = np.random.default_rng(13)
    X, w, v = uniform(rng, (13, 7), jnp.float64), uniform(rng, (13,), jnp.float64) + 1.0, uniform(rng, (13,), jnp.float64)
    G, g = jax.jit(lambda X, w, v: kernels.weighted_gram(X, w, block=3, rows=5, ones=ones, v=v))(X, w, v)
    Xa = np.c_[X, np.ones(13)] if ones else np.asarray(X)
    assert_close(G, _dense_gram(X, w, ones), 1e-12, "G with v")
    assert_close(g, np.asarray(v) @ Xa, 1e-12, "vᵀX")
    np.testing.assert_array_equal(G, G.T)


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 3), st.integers(1, 14), st.booleans(), st.booleans(), seeds)
@example(1, 1, 2, 1, False, False, 0)  # one sample
@example(7, 3, 3, 3, True, True, 1)  # rows not dividing n: the last chunk moved back
@example(5, 2, 1, 2, True, True, 4)  # one class
def test_softmax_weighted_gram_equals_the_einsum_reference(n, d, k, rows, ones, with_r, seed):
    rng = np.random.default_rng(seed)
    X, P = uniform(rng, (n, d), jnp.float64, 2.0), probability_rows(rng, (n, k), jnp.float64, one_hot=False)
    r = uniform(rng, (n,), jnp.float64) + 1.5 if with_r else None
    H = jax.jit(lambda X, P, r: kernels.softmax_weighted_gram(X, P, r, rows=rows, ones=ones))(X, P, r)
    D = d + ones
    assert H.shape == (D, k, D, k) and H.dtype == jnp.float64
    assert_close(H, _dense_softmax_gram(X, P, r, ones), 1e-12, f"n={n}, d={d}, k={k}, rows={rows}, ones={ones}")
    flat = np.asarray(H).reshape(D * k, D * k)
    np.testing.assert_array_equal(flat, flat.T)


def test_multinomial_hessian_with_default_row_chunks_matches_the_einsum_reference():
    """n above the default chunk height (256 rows at d = 51, k = 10) with a tail, soft labels (r ≠ 1)."""
    n, d, k = 300, 51, 10
    assert kernels.softmax_rows(n, d, k) < n and n % kernels.softmax_rows(n, d, k) != 0
    rng = np.random.default_rng(14)
    X, Theta = uniform(rng, (n, d), jnp.float64), uniform(rng, (d, k), jnp.float64, 0.3)
    Y = probability_rows(rng, (n, k), jnp.float64, one_hot=False) * (1.0 + uniform(rng, (n, 1), jnp.float64, 0.5))
    H = jax.jit(lg.multinomial_hessian)(Theta, X, Y, 0.25)
    P = jax.nn.softmax(X @ Theta, axis=1)
    expected = _dense_softmax_gram(X, P, jnp.sum(Y, axis=1)) + 0.25 * np.einsum("ij,ab->iajb", np.eye(d), np.eye(k))
    assert_close(H, expected, 1e-12, "multinomial_hessian by row chunks")
    np.testing.assert_array_equal(np.asarray(H).reshape(d * k, d * k), np.asarray(H).reshape(d * k, d * k).T)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_softmax_weighted_gram_and_multinomial_hessian_form_no_n_by_d_by_k_by_k_array():
    """XLA's temporary memory at n = 20000, d = 20, k = 10 (float64) stays far below the 320 MB of an
    ``n × d × k × k`` intermediate (compiled only, nothing runs)."""
    n, d, k = 20000, 20, 10
    f64 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float64)
    intermediate = n * d * k * k * 8
    temp = _temp_bytes(lambda X, P, r: kernels.softmax_weighted_gram(X, P, r, ones=True), f64(n, d), f64(n, k), f64(n))
    assert temp < intermediate / 20, f"softmax_weighted_gram(ones=True): {temp} bytes of temporaries"
    temp = _temp_bytes(lg.multinomial_hessian, f64(d, k), f64(n, d), f64(n, k), f64())
    assert temp < intermediate / 20, f"multinomial_hessian: {temp} bytes of temporaries"


# ---------------------------------------------------------------------------------------------
# Transformations: finite differences, grad of grad, vmap


def test_finite_differences_float64():
    """jax.test_util.check_grads in reverse mode, jitted (second order: the exact Hessian tests)."""
    theta, X, y = binary_case(2, 5, 3, jnp.float64)
    check_grads(jax.jit(lg.logistic_loss), (theta, X, y, 0.3), order=1, modes=["rev"])
    Theta, X, Y = multinomial_case(2, 4, 2, 3, jnp.float64, one_hot=False)
    check_grads(jax.jit(lg.multinomial_loss), (Theta, X, Y, 0.3), order=1, modes=["rev"])


@pytest.mark.parametrize("name", ["logistic_loss", "multinomial_loss"])
def test_reverse_over_reverse_and_forward_over_reverse_equal_the_closed_form_hessian(name):
    if name == "logistic_loss":
        case = binary_case(7, 8, 3, jnp.float64)
    else:
        case = multinomial_case(7, 8, 3, 3, jnp.float64)
    rule, closed = getattr(lg, name), getattr(lg, name.replace("loss", "hessian"))
    run = jax.jit(lambda *a: (jax.jacrev(jax.grad(rule))(*a), jax.hessian(rule)(*a), closed(*a)))
    rev_rev, fwd_rev, H = run(*case, 0.2)
    assert_close(rev_rev, H, F64_RTOL, "jacrev(grad)")
    assert_close(fwd_rev, H, F64_RTOL, "jax.hessian")


def test_per_example_gradients_under_vmap():
    theta, X, y = binary_case(9, 6, 3, jnp.float64)
    per_example = jax.jit(jax.vmap(jax.grad(lg.logistic_loss), in_axes=(None, 0, 0)))(theta, X[:, None], y[:, None])
    expected = (jax.nn.sigmoid(X @ theta) - y)[:, None] * X  # (π_i − y_i) x_i
    assert_close(per_example, expected, F64_RTOL, "vmap")


def test_gradient_runs_through_the_custom_rule(monkeypatch):
    assert_runs_through_custom_rule(lg._logistic_loss, lg.logistic_loss, binary_case(0, 3, 2, jnp.float64), monkeypatch)
    Theta, X, Y = multinomial_case(0, 3, 2, 3, jnp.float64)
    assert_runs_through_custom_rule(lg._multinomial_loss, lg.multinomial_loss, (Theta, X, Y), monkeypatch)


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_naming_argument_and_shapes():
    theta, X, y = binary_case(0, 4, 3, jnp.float64)
    Theta, _, Y = multinomial_case(0, 4, 3, 2, jnp.float64)
    cases = [
        (lg.logistic_loss, (theta[:2], X, y), r"logistic_loss: theta has shape \(2,\); expected \(3,\)"),
        (lg.logistic_hessian, (theta, X, y[:3]), r"logistic_hessian: y has shape \(3,\); expected \(4,\)"),
        (lg.logistic_loss, (theta, X[0], y), r"X must be 2-D with shape \(n, d\).*got shape \(3,\)"),
        (lg.logistic_loss, (theta, X, y.astype(jnp.int32)), r"y has dtype int32.*y\.astype\(X\.dtype\)"),
        (lg.multinomial_loss, (Theta[:2], X, Y), r"Theta has shape \(2, 2\); expected \(3, 2\) \(one row per column of X\)"),
        (lg.multinomial_hessian, (Theta, X, Y[:, :1]), r"Y has shape \(4, 1\); expected \(4, 2\)"),
        (lg.multinomial_loss, (Theta, X, jnp.array([0, 1, 1, 0])), r"Y has dtype int.*one_hot\(labels, 2\)"),
        # no classes: refused by name, not NumPy's anonymous "zero-size array to reduction operation max"
        (lg.multinomial_loss, (Theta[:, :0], X, Y[:, :0]),
         r"multinomial_loss: Theta has shape \(3, 0\); expected at least one column"),
        (lg.multinomial_gradient, (Theta[:, :0], X, Y[:, :0]), r"multinomial_gradient: Theta has shape \(3, 0\)"),
        (lg.multinomial_hessian, (Theta[:, :0], X, Y[:, :0]), r"multinomial_hessian: Theta has shape \(3, 0\)"),
        (lg.logistic_loss, (theta, X, y, None), r"logistic_loss: l2 must be a finite number >= 0 .*; got None"),
        (lg.logistic_loss, (theta, X, y, jnp.asarray(True)), r"logistic_loss: l2 has dtype bool"),
    ]
    for fn, args, match in cases:
        with pytest.raises(ValueError, match=match):
            fn(*args)
        with pytest.raises(ValueError, match=match):  # at trace time, under jit too
            jax.jit(fn)(*args)
    with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0; got -1(\.0)?"):
        lg.logistic_loss(theta, X, y, -1.0)
    with pytest.raises(ValueError, match=r"l2 must be a scalar; got shape \(3,\)"):
        lg.multinomial_loss(Theta, X, Y, jnp.ones(3))
    with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0; got -0\.5"):
        lg.logistic_loss(theta, X, y, jnp.asarray(-0.5))  # a concrete 0-d array is checked like a number
    # Concrete labels are checked (the solvers refuse the same); under jit only shapes can be.
    with pytest.raises(ValueError, match=r"logistic_loss: y must hold labels \(or probabilities\) in \[0, 1\]; "
                                         r"y contains 1 outside \[0, 1\] \(or NaN\) value\(s\) \(first at row 0, value 2\.0\)"):
        lg.logistic_loss(theta, X, y.at[0].set(2.0))
    with pytest.raises(ValueError, match=r"y must hold labels .*first at row 1, value nan"):
        lg.logistic_hessian(theta, X, y.at[1].set(jnp.nan))
    # (the position of the first bad entry is named since _validation.require_label_rows)
    with pytest.raises(ValueError, match=r"Y must hold non-negative, finite label rows .*first at row 0, column 0, "
                                         r"value -1\.0"):
        lg.multinomial_loss(Theta, X, Y.at[0, 0].set(-1.0))
    with pytest.raises(ValueError, match=r"Y must hold non-negative, finite label rows .*first at row 1, column 0, value inf"):
        lg.multinomial_gradient(Theta, X, Y.at[1, 0].set(jnp.inf))
    for l2 in (True, np.bool_(False)):
        with pytest.raises(ValueError, match=r"multinomial_loss: l2 must be a number"):
            lg.multinomial_loss(Theta, X, Y, l2)
    for fn, args in [(lg.logistic_loss, (theta, X[:0], y[:0])), (lg.multinomial_gradient, (Theta, X[:0], Y[:0]))]:
        with pytest.raises(ValueError, match=r"X has no rows \(shape \(0, 3\)\)"):
            fn(*args)


def test_integer_l2_is_accepted_eagerly_under_jit_and_as_a_0d_array():
    """An integer l2 (Python, NumPy or a 0-d integer array) is cast to the rule's dtype: float32 stays float32."""
    theta, X, y = binary_case(0, 4, 3, jnp.float32)
    Theta, Xm, Y = multinomial_case(0, 4, 3, 2, jnp.float32)
    for fn, args in [(lg.logistic_loss, (theta, X, y)), (lg.multinomial_loss, (Theta, Xm, Y))]:
        expected = fn(*args, jnp.float32(2.0))
        # under jit a Python int is a traced integer array
        for got, l2 in [(jax.jit(fn)(*args, 2), 2), *((fn(*args, l2), l2) for l2 in (np.array(2), jnp.asarray(2, jnp.int32)))]:
            assert got.dtype == jnp.float32
            assert_close(got, expected, F32_RTOL, f"{fn.__name__} with l2={l2!r}")
    assert lg.logistic_hessian(theta, X, y, np.array(0)).dtype == jnp.float32
    assert lg.multinomial_gradient(Theta, Xm, Y, np.int64(0)).dtype == jnp.float32
