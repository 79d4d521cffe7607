"""Specification of the FCNN rules (seed 000, §6.1–6.3.1) against jax.grad of the references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import mdc_jax
from mdc_jax import reference as ref
from mdc_jax.reference.fcnn import mlp_case
from mdc_jax.rules import fcnn as fcnn_module
from mdc_jax.testing import assert_grads_match, assert_tree_shapes_and_dtypes

from .helpers import F32_RTOL, F64_RTOL, assert_close, assert_runs_through_custom_rule, uniform

ACTIVATIONS = ["identity", "tanh", "sigmoid", "relu", "softplus"]
ARGNUMS = (0, 1, 2, 3)  # params, X, Y, l2: every argument has a cotangent


def regression_case(seed, n, dims, dtype):
    return mlp_case(seed, n, dims, dtype, task="regression")


def classification_case(seed, n, dims, dtype, one_hot=True):
    return mlp_case(seed, n, dims, dtype, task="classification", one_hot=one_hot)


def rule_and_reference(kind, activations, **kw):
    if kind == "regression":
        return (lambda p, X, Y, l2: mdc_jax.fcnn_regression_loss(p, X, Y, activations, l2),
                lambda p, X, Y, l2: ref.fcnn_regression_loss(p, X, Y, activations, l2))
    return (lambda p, X, Y, l2: mdc_jax.fcnn_classification_loss(p, X, Y, activations, l2, **kw),
            lambda p, X, Y, l2: ref.fcnn_classification_loss(p, X, Y, activations, l2))


def assert_matches_autodiff(kind, activations, case, l2, rtol, **kw):
    """Loss and every argument's gradient against autodiff of the reference, in the arguments' shapes and
    dtypes (``l2`` in ``X``'s dtype, as the rule casts an integer one)."""
    rule, reference = rule_and_reference(kind, activations, **kw)
    assert_grads_match(rule, reference, (*case, jnp.asarray(l2, case[1].dtype)), argnums=ARGNUMS, rtol=rtol)


layer_dims = st.lists(st.integers(1, 9), min_size=2, max_size=5)  # d_0 .. d_L, so L = 1..4
sizes = st.integers(1, 8)
seeds = st.integers(0, 2**31 - 1)
l2s = st.sampled_from([0.0, 0.01, 0.7])


@st.composite
def regression_setups(draw):
    dims = draw(layer_dims)
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=len(dims) - 1, max_size=len(dims) - 1))
    return draw(seeds), draw(sizes), dims, acts, draw(l2s)


@st.composite
def classification_setups(draw):
    dims = [*draw(layer_dims), draw(st.integers(2, 7))]  # classes K ≥ 2
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=len(dims) - 2, max_size=len(dims) - 2))
    return draw(seeds), draw(sizes), dims, acts, draw(l2s), draw(st.booleans())


# ---------------------------------------------------------------------------------------------
# Agreement with autodiff


@given(regression_setups())
@example((0, 1, [3, 1], ["identity"], 0.0))  # N = 1, one layer
@example((1, 5, [4, 6, 6, 6, 6, 2], ["tanh", "relu", "softplus", "sigmoid", "identity"], 0.1))
def test_regression_grad_matches_autodiff_float64(setup):
    seed, n, dims, acts, l2 = setup
    assert_matches_autodiff("regression", acts, regression_case(seed, n, dims, jnp.float64), l2, F64_RTOL)


@settings(max_examples=6)  # float64 (10 examples) is the strict check; float32 checks dtypes and tolerances
@given(regression_setups())
def test_regression_grad_matches_autodiff_float32(setup):
    seed, n, dims, acts, l2 = setup
    assert_matches_autodiff("regression", acts, regression_case(seed, n, dims, jnp.float32), l2, F32_RTOL)


@given(classification_setups())
@example((0, 1, [3, 2], [], 0.0, True))  # N = 1, one layer, two classes
def test_classification_grad_matches_autodiff_float64(setup):
    seed, n, dims, acts, l2, one_hot = setup
    case = classification_case(seed, n, dims, jnp.float64, one_hot)
    assert_matches_autodiff("classification", acts, case, l2, F64_RTOL)


@settings(max_examples=6)
@given(classification_setups())
def test_classification_grad_matches_autodiff_float32(setup):
    seed, n, dims, acts, l2, one_hot = setup
    case = classification_case(seed, n, dims, jnp.float32, one_hot)
    assert_matches_autodiff("classification", acts, case, l2, F32_RTOL)


@given(classification_setups())
def test_classification_general_backward_agrees_with_simple(setup):
    """§6.3.1 checks that eq. 44's E equals eq. 40's; so do we, on moderate logits."""
    seed, n, dims, acts, l2, one_hot = setup
    case = classification_case(seed, n, dims, jnp.float64, one_hot)
    simple, _ = rule_and_reference("classification", acts, backward="simple")
    general, _ = rule_and_reference("classification", acts, backward="general")
    both = jax.jit(lambda *a: (jax.grad(general, argnums=ARGNUMS)(*a), jax.grad(simple, argnums=ARGNUMS)(*a)))
    assert_close(*both(*case, l2), F64_RTOL, "general vs simple E")


@settings(max_examples=4)
@given(classification_setups(), st.integers(1, 9), st.integers(1, 8))
@example((0, 1, [3, 2], [], 0.0, True), 1, 1)  # N = 1, one layer, K = 2, blocks of one
@example((1, 7, [4, 5, 3, 7], ["relu", "softplus"], 0.7, False), 3, 4)  # blocks dividing neither N nor K
def test_fused_head_matches_autodiff_float64(setup, token_block, class_block):
    """head='fused' (linear_softmax_cross_entropy's blocks as the last layer) is the same loss and the
    same cotangents for every argument, soft labels and the penalty included."""
    seed, n, dims, acts, l2, one_hot = setup
    case = classification_case(seed, n, dims, jnp.float64, one_hot)
    assert_matches_autodiff("classification", acts, case, l2, F64_RTOL, head="fused",
                            block_size=(token_block, class_block))


def test_fused_head_float32_and_integer_labels_equal_one_hot_rows():
    params, X, Y = classification_case(2, 9, [6, 8, 11], jnp.float32, one_hot=False)
    assert_matches_autodiff("classification", ["tanh"], (params, X, Y), 0.01, F32_RTOL, head="fused", block_size=4)
    params, X, _ = classification_case(3, 9, [6, 8, 11], jnp.float64)
    labels = jnp.asarray(np.random.default_rng(3).integers(0, 11, 9), jnp.int32)
    fused = lambda p, X: mdc_jax.fcnn_classification_loss(p, X, labels, ["relu"], 0.1, head="fused", block_size=(4, 3))
    one_hot = jax.nn.one_hot(labels, 11, dtype=jnp.float64)
    plain = lambda p, X: mdc_jax.fcnn_classification_loss(p, X, one_hot, ["relu"], 0.1)
    assert_close(jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(params, X),
                 jax.value_and_grad(plain, argnums=(0, 1))(params, X), F64_RTOL, "integer labels")
    g_labels = jax.grad(lambda y: mdc_jax.fcnn_classification_loss(params, X, y, ["relu"], head="fused"),
                        allow_int=True)(labels)
    assert g_labels.dtype == jax.dtypes.float0
    # under jit a label outside [0, K) is not checked; it is the zero row its one-hot would be, in both heads
    bad = labels.at[0].set(-1).at[4].set(11)
    fused = lambda p, y: mdc_jax.fcnn_classification_loss(p, X, y, ["relu"], head="fused", block_size=4)
    plain = lambda p: mdc_jax.fcnn_classification_loss(p, X, jax.nn.one_hot(bad, 11, dtype=jnp.float64), ["relu"])
    assert_close(jax.jit(jax.value_and_grad(fused))(params, bad), jax.value_and_grad(plain)(params), F64_RTOL,
                 "labels under jit")


def test_fused_head_int64_labels_out_of_range_under_jit_equal_the_plain_heads_zero_rows():
    """An int64 label of 2**32 + 1 under jit is the zero row (as jax.nn.one_hot gives it to the plain head),
    not class 1 after a cast to int32."""
    params, X, _ = classification_case(5, 6, [4, 5, 3], jnp.float64)
    labels = jnp.asarray([0, 2**32 + 1, 2, 1, 2**33, 0], jnp.int64)
    fused = lambda p, y: mdc_jax.fcnn_classification_loss(p, X, y, ["tanh"], head="fused", block_size=(4, 2))
    plain = lambda p: mdc_jax.fcnn_classification_loss(p, X, jax.nn.one_hot(labels, 3, dtype=jnp.float64), ["tanh"])
    assert_close(jax.jit(jax.value_and_grad(fused))(params, labels), jax.value_and_grad(plain)(params), F64_RTOL,
                 "int64 labels under jit")


def test_fused_head_follows_the_dtypes_of_all_its_inputs():
    """float32 inputs into a float64 network: the fused head computes in float64, as the plain one does."""
    params, X, _ = classification_case(4, 8, [5, 6, 9], jnp.float64)
    labels = jnp.asarray(np.random.default_rng(4).integers(0, 9, 8), jnp.int32)
    X32 = X.astype(jnp.float32)
    with jax.numpy_dtype_promotion("standard"):  # mixing float32 and float64 is what this test is about
        fused = mdc_jax.fcnn_classification_loss(params, X32, labels, ["tanh"], head="fused")
        plain = mdc_jax.fcnn_classification_loss(params, X32, jax.nn.one_hot(labels, 9, dtype=jnp.float64), ["tanh"])
    assert fused.dtype == plain.dtype == jnp.float64
    assert_close(fused, plain, F64_RTOL, "float32 X, float64 parameters")


def test_classification_unnormalised_label_rows_match_autodiff():
    """Rows of Y that do not sum to one (e.g. weighted samples) keep the exact gradient."""
    params, X, _ = classification_case(3, 6, [5, 4, 3], jnp.float64)
    Y = uniform(9, (6, 3), jnp.float64, 1.0) + 1.0
    assert_matches_autodiff("classification", ["tanh"], (params, X, Y), 0.0, F64_RTOL)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_wide_and_deep_network_matches_autodiff_float64(kind):
    dims = [64, 256, 256, 128, 128, 64, 64, 32, 10]
    acts = ["tanh", "relu", "softplus", "sigmoid", "tanh", "relu", "identity", "tanh"]
    if kind == "regression":
        case = regression_case(7, 33, dims, jnp.float64)
    else:
        case = classification_case(7, 33, dims, jnp.float64)
        acts = acts[:-1]
    assert_matches_autodiff(kind, acts, case, 0.05, F64_RTOL)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_in_every_position_matches_autodiff(name):
    case = regression_case(11, 7, [4, 5, 3, 2], jnp.float64)
    assert_matches_autodiff("regression", [name] * 3, case, 0.1, F64_RTOL)
    case = classification_case(11, 7, [4, 5, 3, 3], jnp.float64)
    assert_matches_autodiff("classification", [name] * 2, case, 0.1, F64_RTOL)


def test_user_registered_activation_with_input_derivative_matches_autodiff():
    """A derivative written in terms of A makes the rule save A_j; the result must not change."""
    mdc_jax.register_activation("test_sin", jnp.sin, jnp.cos, overwrite=True)
    case = regression_case(5, 6, [3, 4, 4, 2], jnp.float64)
    assert_matches_autodiff("regression", ["test_sin", "tanh", "test_sin"], case, 0.2, F64_RTOL)
    case = classification_case(5, 6, [3, 4, 4, 3], jnp.float64)
    assert_matches_autodiff("classification", ["test_sin", "test_sin"], case, 0.2, F64_RTOL)


# ---------------------------------------------------------------------------------------------
# Finite differences, transformations, numerics


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_gradients_match_finite_differences_float64(kind):
    if kind == "regression":
        case, acts = regression_case(2, 5, [3, 4, 2], jnp.float64), ["softplus", "tanh"]
    else:
        case, acts = classification_case(2, 5, [3, 4, 3], jnp.float64, one_hot=False), ["sigmoid"]
    rule, _ = rule_and_reference(kind, acts)
    check_grads(rule, (*case, 0.3), order=2, modes=["rev"], eps=1e-4)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_rules_under_jit_match_eager(kind):
    case = (regression_case if kind == "regression" else classification_case)(4, 6, [5, 4, 3], jnp.float64)
    rule, reference = rule_and_reference(kind, ["tanh"] if kind == "classification" else ["tanh", "identity"])
    jitted = jax.jit(jax.value_and_grad(rule, argnums=ARGNUMS))(*case, 0.1)
    assert_close(jitted, jax.value_and_grad(reference, argnums=ARGNUMS)(*case, 0.1), F64_RTOL, "jit")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_per_example_gradients_under_vmap(kind):
    n = 5
    case = (regression_case if kind == "regression" else classification_case)(6, n, [4, 3, 3], jnp.float64)
    acts = ["relu"] if kind == "classification" else ["relu", "sigmoid"]
    rule, reference = rule_and_reference(kind, acts)
    params, X, Y = case
    per_example = jax.vmap(jax.grad(rule), in_axes=(None, 0, 0, None))(params, X[:, None, :], Y[:, None, :], 0.1)
    looped = [jax.grad(reference)(params, X[i:i + 1], Y[i:i + 1], 0.1) for i in range(n)]
    assert_close(per_example, jax.tree.map(lambda *g: jnp.stack(g), *looped), F64_RTOL, "vmap")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_hessian_vector_products_by_grad_of_grad(kind):
    case = (regression_case if kind == "regression" else classification_case)(8, 6, [4, 5, 3], jnp.float64)
    acts = ["softplus"] if kind == "classification" else ["tanh", "sigmoid"]
    rule, reference = rule_and_reference(kind, acts)
    params, X, Y = case
    direction = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params)

    def hvp(loss):
        def directional(p):
            g = jax.grad(loss)(p, X, Y, 0.2)
            return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
        return jax.grad(directional)(params)

    assert_close(hvp(rule), hvp(reference), 1e-9, "Hessian-vector product")


def test_classification_logits_of_1e4_give_finite_correct_gradients():
    X = jnp.array([[1.0, -1.0], [-1.0, 1.0], [0.5, 0.5]], jnp.float64)
    W = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], jnp.float64)  # logits up to ±2e4
    b = jnp.array([0.0, 0.0, 1e4], jnp.float64)
    Y = jax.nn.one_hot(jnp.array([1, 2, 0]), 3, dtype=jnp.float64)  # labels the model gets wrong
    for dtype, rtol in [(jnp.float64, F64_RTOL), (jnp.float32, F32_RTOL)]:
        case = jax.tree.map(lambda a: a.astype(dtype), ([(W, b)], X, Y))
        rule, reference = rule_and_reference("classification", [])
        value, grads = jax.value_and_grad(rule, argnums=ARGNUMS)(*case, 0.0)
        ref_value, ref_grads = jax.value_and_grad(reference, argnums=ARGNUMS)(*jax.tree.map(
            lambda a: a.astype(jnp.float64), case), 0.0)  # float64 autodiff is the yardstick for both dtypes
        assert float(value) > 1e3
        assert_close(value, ref_value, rtol, f"±1e4 logits {dtype}: loss")
        assert_close(grads, ref_grads, rtol, f"±1e4 logits {dtype}: gradients")


def test_dtypes_are_preserved_and_bfloat16_values_match_float32():
    """Every dtype keeps its own; in bfloat16 the loss and gradients are float32's on the same
    (bfloat16-rounded) inputs, to bfloat16's precision (8 bits: 2⁻⁸ ≈ 4e-3 per rounding)."""
    for dtype in (jnp.float32, jnp.float64, jnp.bfloat16):
        for kind, case, acts in [("classification", classification_case(1, 4, [3, 5, 2], dtype), ["tanh"]),
                                 ("regression", regression_case(1, 4, [3, 5, 2], dtype), ["relu", "identity"])]:
            rule, reference = rule_and_reference(kind, acts)
            value, grads = jax.jit(jax.value_and_grad(rule, argnums=(0, 1, 2)))(*case, 0.0)
            assert_tree_shapes_and_dtypes(grads, tuple(case), what=f"{dtype.__name__} {kind} gradients")
            if dtype == jnp.bfloat16:
                case32 = jax.tree.map(lambda a: a.astype(jnp.float32), case)
                ref_value, ref_grads = jax.jit(jax.value_and_grad(reference, argnums=(0, 1, 2)))(*case32, 0.0)
                assert_close(value.astype(jnp.float32), ref_value, 2e-2, f"bfloat16 {kind} loss")
                scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
                assert_close(jax.tree.map(lambda g: g.astype(jnp.float32), grads), ref_grads, 5e-2,
                             f"bfloat16 {kind} gradients", atol=2e-2 * scale)


def test_bfloat16_gradients_are_close_to_float64():
    case64 = classification_case(3, 16, [8, 16, 4], jnp.float64)
    case16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), case64)
    g16 = jax.grad(mdc_jax.fcnn_classification_loss)(*case16, ["tanh"])
    g64 = jax.grad(ref.fcnn_classification_loss)(*case64, ["tanh"])
    assert_close(g16, g64, 5e-2, "bfloat16 vs float64")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_gradient_runs_through_the_custom_rule(kind, monkeypatch):
    """The loss is a custom_vjp call, and jax.grad invokes its closed-form backward."""
    case = (regression_case if kind == "regression" else classification_case)(0, 3, [2, 3, 2], jnp.float64)
    rule, _ = rule_and_reference(kind, ["tanh"] if kind == "classification" else ["tanh", "tanh"])
    core = fcnn_module._regression if kind == "regression" else fcnn_module._classification
    assert_runs_through_custom_rule(core, rule, (*case, 0.0), monkeypatch)


def test_l2_gradient_is_lambda_times_weights():
    """Only W_j feel the penalty (§6.2: 'only the gradients with respect to W_j')."""
    params, X, Y = regression_case(4, 5, [3, 4, 2], jnp.float64)
    loss = lambda p, l2: mdc_jax.fcnn_regression_loss(p, X, Y, ["tanh", "identity"], l2)
    g0, g1 = jax.grad(loss)(params, 0.0), jax.grad(loss)(params, 0.5)
    for (dW0, db0), (dW1, db1), (W, _) in zip(g0, g1, params):
        np.testing.assert_allclose(dW1 - dW0, 0.5 * W, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(db1, db0)


# ---------------------------------------------------------------------------------------------
# Bad input


def _bad(kind, params, X, Y, acts, match, **kw):
    fn = mdc_jax.fcnn_regression_loss if kind == "regression" else mdc_jax.fcnn_classification_loss
    with pytest.raises(ValueError, match=match):
        fn(params, X, Y, acts, **kw)
    with pytest.raises(ValueError, match=match):  # at trace time, under jit too
        jax.jit(lambda p, x, y: fn(p, x, y, acts, **kw))(params, X, Y)


def test_bad_input_raises_naming_argument_and_shapes():
    params, X, Y = regression_case(0, 4, [3, 5, 2], jnp.float64)
    acts = ["tanh", "identity"]
    _bad("regression", params, X[:, :2], Y, acts, r"W_1.*\(3, 5\).*expected \(2, d_1\).*X's columns")
    _bad("regression", params, X, Y[:3], acts, r"Y has shape \(3, 2\); expected \(4, 2\)")
    _bad("regression", params, X, Y[:, :1], acts, r"Y has shape \(4, 1\); expected \(4, 2\)")
    _bad("regression", params, X, Y, ["tanh"], r"activations has 1 entries; expected 2")
    _bad("regression", params, X, Y, ["tanh", "swish!"], r"activations\[1\].*unknown activation 'swish!'")
    _bad("regression", params, X[0], Y, acts, r"X must be 2-D with shape \(N, d_0\); got shape \(3,\)")
    _bad("regression", params, X[None], Y, acts, r"X must be 2-D")
    _bad("regression", params, X, Y, "tanh", r"activations must be a sequence")
    _bad("regression", [params[0], (params[1][0], params[1][1][:1])], X, Y, acts, r"b_2.*\(1,\); expected \(2,\)")
    _bad("regression", [params[0], (params[1][0][:4], params[1][1])], X, Y, acts,
         r"W_2.*\(4, 2\); expected \(5, d_2\).*layer 1")
    _bad("regression", params, X, Y, acts, r"l2 must be a finite number >= 0", l2=-1.0)
    _bad("regression", [], X, Y, acts, r"params must be a non-empty sequence")
    _bad("regression", params, X[:0], Y[:0], acts, r"X has no rows")
    _bad("regression", params, X, Y.tolist(), acts, r"fcnn_regression_loss: Y must be an array .*got a list")
    _bad("regression", params, X, Y, acts, r"fcnn_regression_loss: l2 must be a finite number >= 0 .*got None", l2=None)
    _bad("regression", params, X, Y, acts, r"l2 must be a number; got True", l2=True)
    _bad("regression", params, X, Y, acts, r"l2 has dtype bool", l2=np.array(True))
    _bad("regression", params, X, Y, ["tanh", 3], r"activations\[1\]: unknown activation 3; registered activations: .*tanh")
    cparams, cX, cY = classification_case(0, 4, [3, 5, 2], jnp.float64)
    _bad("classification", cparams, cX, cY.tolist(), ["tanh"], r"fcnn_classification_loss: Y must be an array .*got a list")
    _bad("classification", cparams, cX, cY, ["tanh"], r"l2 must be a finite number >= 0 .*got None", l2=None)
    # no classes: refused by name, not NumPy's anonymous "zero-size array to reduction operation max"
    _bad("classification", [cparams[0], (cparams[1][0][:, :0], cparams[1][1][:0])], cX, cY[:, :0], ["tanh"],
         r"fcnn_classification_loss: params\[1\]\[0\] \(W_2\) has shape \(5, 0\); expected at least one column")


def test_values_are_checked_when_concrete_and_numpy_scalars_are_accepted():
    params, X, Y = regression_case(0, 4, [3, 5, 2], jnp.float64)
    acts = ["tanh", "identity"]
    for l2 in (jnp.asarray(-1.0), np.float64(-0.5), np.float32(np.nan), float("inf")):
        with pytest.raises(ValueError, match=r"fcnn_regression_loss: l2 must be a finite number >= 0"):
            mdc_jax.fcnn_regression_loss(params, X, Y, acts, l2)
    with pytest.raises(ValueError, match=r"X must be an array \(jax\.Array or numpy\.ndarray\); got a list"):
        mdc_jax.fcnn_regression_loss(params, X.tolist(), Y, acts)
    expected = mdc_jax.fcnn_regression_loss(params, X, Y, acts, 0.25)
    for l2 in (np.float64(0.25), np.asarray(0.25), jnp.asarray(0.25)):
        assert_close(mdc_jax.fcnn_regression_loss(params, X, Y, acts, l2), expected, F64_RTOL, f"l2 as {type(l2)}")
    with jax.numpy_dtype_promotion("standard"):  # a float32 scalar with float64 parameters mixes dtypes
        assert_close(mdc_jax.fcnn_regression_loss(params, X, Y, acts, np.float32(0.25)), expected, F64_RTOL, "float32 l2")


def test_integer_l2_is_accepted_under_jit_and_as_a_0d_array_and_float32_stays_float32():
    params, X, Y = classification_case(0, 4, [3, 5, 2], jnp.float32)
    loss = lambda p, l2: mdc_jax.fcnn_classification_loss(p, X, Y, ["tanh"], l2)
    expected = loss(params, jnp.float32(2.0))
    # under jit a Python int is a traced integer array
    for got in (jax.jit(loss)(params, 2), loss(params, np.array(2)), loss(params, jnp.asarray(2, jnp.int32))):
        assert got.dtype == jnp.float32
        assert_close(got, expected, F32_RTOL, "an integer l2")
    value, grads = jax.jit(jax.value_and_grad(mdc_jax.fcnn_regression_loss), static_argnums=3)(
        params, X, Y, ("tanh", "identity"), 1)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves((value, grads)))
    assert mdc_jax.fcnn_regression_loss(params, X, Y, ["tanh", "identity"], np.array(1)).dtype == jnp.float32


def test_concrete_labels_must_be_non_negative_and_finite():
    params, X, Y = classification_case(0, 4, [3, 5, 3], jnp.float64)
    fn = mdc_jax.fcnn_classification_loss
    with pytest.raises(ValueError, match=r"fcnn_classification_loss: Y must hold non-negative, finite label rows .*Y contains "
                                         r"1 negative or non-finite value\(s\) \(first at row 2, column 1, value -1\.0\)"):
        fn(params, X, Y.at[2, 1].set(-1.0), ["tanh"])
    with pytest.raises(ValueError, match=r"Y contains 2 negative or non-finite value\(s\) "
                                         r"\(first at row 0, column 0, value nan\)"):
        fn(params, X, np.asarray(Y.at[0, 0].set(jnp.nan).at[3, 2].set(jnp.inf)), ["tanh"])
    # under jit only shapes can be checked; regression targets may be negative
    assert np.isfinite(jax.jit(lambda y: fn(params, X, y, ["tanh"]))(Y))
    assert np.isfinite(mdc_jax.fcnn_regression_loss(params, X, -Y, ["tanh", "identity"]))


def test_forward_always_returns_a_jax_array():
    params = [(np.ones((3, 2)), np.zeros(2))]
    out = mdc_jax.fcnn_forward(params, np.ones((4, 3)), ["identity"])
    assert isinstance(out, jax.Array) and out.shape == (4, 2)


def test_integer_labels_are_rejected_with_a_one_hot_hint():
    params, X, _ = classification_case(0, 4, [3, 5, 3], jnp.float64)
    labels = jnp.array([0, 2, 1, 1])
    _bad("classification", params, X, labels, ["tanh"],
         r"Y has dtype int.*\(4,\).*jax\.nn\.one_hot\(labels, 3\) or use head='fused'")
    _bad("classification", params, X, labels[:, None], ["tanh"], r"Y has dtype int")
    _bad("classification", params, X, jax.nn.one_hot(labels, 3), ["tanh", "tanh"],
         r"expected 1 for 2 layers \(one per hidden layer")
    _bad("classification", params, X, jax.nn.one_hot(labels, 3), ["tanh"], r"backward must be", backward="auto")
    fused = {"head": "fused"}
    _bad("classification", params, X, labels[:3], ["tanh"], r"Y has shape \(3,\); expected \(4,\) \(integer labels", **fused)
    with pytest.raises(ValueError, match=r"Y must hold class indices in \[0, 3\); got \[3\] \(first at row 2\)"):
        mdc_jax.fcnn_classification_loss(params, X, labels.at[2].set(3), ["tanh"], head="fused")  # concrete labels
    _bad("classification", params, X, labels, ["tanh"], r"head must be one of \('plain', 'fused'\); got 'cut'", head="cut")
    _bad("classification", params, X, labels, ["tanh"], r"head='fused' applies .*backward='general' needs the plain",
         head="fused", backward="general")
    _bad("classification", params, X, jax.nn.one_hot(labels, 3), ["tanh"], r"block_size applies to head='fused' only",
         block_size=2)
    _bad("classification", params, X, labels, ["tanh"], r"the vocabulary block must be a positive int; got -1",
         head="fused", block_size=-1)


def test_bool_labels_with_the_fused_head_name_the_integer_alternative_not_the_fused_head():
    """Issue 20 review: with head='fused' (which takes integer labels) bool labels are refused naming integer
    class indices (N,) or floating rows, and the hint "or use head='fused'" is not offered to a caller who
    used it; the plain head still offers it."""
    params, X, _ = classification_case(0, 4, [3, 5, 3], jnp.float64)
    labels = jnp.array([0, 2, 1, 1]) > 0
    with pytest.raises(ValueError, match=r"Y has dtype bool and shape \(4,\); expected integer class indices of "
                                         r"shape \(4,\), or floating rows of probabilities .* = \(4, 3\)\.$") as info:
        mdc_jax.fcnn_classification_loss(params, X, labels, ["tanh"], head="fused")
    assert "head='fused'" not in str(info.value)
    _bad("classification", params, X, labels, ["tanh"], r"Y has dtype bool.*or use head='fused'")


def test_forward_mode_on_the_rule_raises_but_forward_over_reverse_is_exact():
    """As the README says: jvp of a custom_vjp rule is refused; jax.hessian (jacfwd∘jacrev) works."""
    params, X, Y = classification_case(12, 5, [3, 4, 3], jnp.float64)
    rule = lambda p: mdc_jax.fcnn_classification_loss(p, X, Y, ["tanh"], 0.1)
    reference = lambda p: ref.fcnn_classification_loss(p, X, Y, ["tanh"], 0.1)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(rule, (params,), (params,))
    expected = jax.jit(jax.hessian(reference))(params)
    assert_close(jax.jit(jax.hessian(rule))(params), expected, 1e-9, "jax.hessian")
    assert_close(jax.jit(jax.jacrev(jax.grad(rule)))(params), expected, 1e-9, "jacrev of grad")
