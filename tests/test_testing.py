"""Specification of mdc_jax.testing and `mdc-jax gradcheck`, including negative controls:
deliberately wrong rules must be reported as failing by the API and by the CLI."""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdc_jax import cli, reference
from mdc_jax.gradcheck import run_gradcheck
from mdc_jax.registry import RuleSpec, register_rule, unregister_rule
from mdc_jax.rules.softmax import log_softmax
from mdc_jax.testing import (
    assert_close,
    assert_grads_match,
    assert_tree_shapes_and_dtypes,
    assert_vjp_matches,
    check_vjp,
    count_traces,
    rel_err,
)

from .helpers import numpy_rng, uniform


def _one_layer_classifier(mistake: str | None):
    """A one-layer softmax classifier, J = −(1/N) ln s¹(XW + 1bᵀ)·Y, with an optional planted mistake."""

    @jax.custom_vjp
    def loss(W, b, X, Y):
        return -jnp.sum(Y * log_softmax(X @ W + b[None, :])) / X.shape[0]

    def fwd(W, b, X, Y):
        return loss(W, b, X, Y), (W, b, X, Y)

    def bwd(res, g):
        W, b, X, Y = res
        logp = log_softmax(X @ W + b[None, :])
        E = g * (jnp.exp(logp) - Y) / X.shape[0]
        if mistake == "flipped_sign":
            E = -E
        if mistake == "missing_1_over_N":
            E = E * X.shape[0]
        dW = X.T @ E
        if mistake == "transposed_weight":
            dW = dW.T
        db = jnp.zeros_like(b) if mistake == "dropped_bias" else jnp.sum(E, axis=0)
        return dW, db, E @ W.T, -g * logp / X.shape[0]

    loss.defvjp(fwd, bwd)
    return loss


def _reference(W, b, X, Y):
    return reference.fcnn_classification_loss([(W, b)], X, Y, [])


def _sample(key, dtype):
    rng = numpy_rng(key)
    d = 4  # square W, so that a transposed weight gradient still has the right shape
    return (uniform(rng, (d, d), dtype), uniform(rng, (d,), dtype), uniform(rng, (6, d), dtype),
            jax.nn.softmax(uniform(rng, (6, d), dtype, 3.0), axis=-1))


MISTAKES = ["flipped_sign", "missing_1_over_N", "transposed_weight", "dropped_bias"]


def test_correct_rule_passes_api():
    report = check_vjp(_one_layer_classifier(None), _reference, _sample(jax.random.PRNGKey(0), jnp.float64))
    assert report.passed, str(report)
    assert report.max_rel_err < 1e-12 and max(report.fd_rel_err.values()) < 1e-6
    assert set(report.arg_rel_err) == {0, 1, 2, 3}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_wrong_rules_fail_api(mistake):
    args = _sample(jax.random.PRNGKey(1), jnp.float64)
    report = check_vjp(_one_layer_classifier(mistake), _reference, args)
    assert not report.passed and report.max_rel_err > 1e-3, str(report)
    with pytest.raises(AssertionError, match=r"(?s)does not match its reference:\nFAILED .*<-- fails"):
        assert_vjp_matches(_one_layer_classifier(mistake), _reference, args)


@pytest.mark.parametrize("mistake", MISTAKES)
def test_finite_differences_catch_a_wrong_rule_even_against_itself(mistake):
    """With the wrong rule as its own 'reference', only the finite differences can object."""
    wrong = _one_layer_classifier(mistake)
    report = check_vjp(wrong, wrong, _sample(jax.random.PRNGKey(2), jnp.float64))
    assert report.max_rel_err == 0.0
    assert not report.passed and max(report.fd_rel_err.values()) > 1e-3, str(report)


def test_float32_checks_use_float32_tolerance_and_nan_fails():
    args32 = _sample(jax.random.PRNGKey(3), jnp.float32)
    report = check_vjp(_one_layer_classifier(None), _reference, args32)
    assert report.passed and report.rtol == 1e-4 and report.dtype == "float32"
    nan_rule = lambda W, b, X, Y: _one_layer_classifier(None)(W, b, X, Y) * jnp.nan
    assert not check_vjp(nan_rule, _reference, args32).passed


def test_argnums_and_errors():
    args = _sample(jax.random.PRNGKey(4), jnp.float64)
    report = check_vjp(_one_layer_classifier("dropped_bias"), _reference, args, argnums=(0, 2))
    assert report.passed and set(report.arg_rel_err) == {0, 2}  # the bias is not checked
    with pytest.raises(ValueError, match="argnums holds 7, but args has 4 entries"):
        check_vjp(_reference, _reference, args, argnums=7)


def _square_sum(x):
    return jnp.sum(x * x)


def test_numpy_integer_argnums_and_0d_tolerances_are_accepted():
    x = jnp.asarray([1.0, -2.0, 0.5])
    for argnums in (np.int64(0), np.array(0), [np.int32(0)]):
        report = check_vjp(_square_sum, _square_sum, (x,), argnums=argnums, finite_differences=False)
        assert report.passed and set(report.arg_rel_err) == {0}
    report = check_vjp(_square_sum, _square_sum, [x], rtol=np.float32(1e-6), atol=np.array(0.0), fd_rtol=jnp.asarray(1e-5),
                       seed=np.int64(3))
    assert report.passed and report.rtol == pytest.approx(1e-6) and report.fd_rtol == pytest.approx(1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"argnums": True}, r"argnums must be an int or a sequence of ints"),
    ({"argnums": np.True_}, r"argnums must be an int or a sequence of ints"),
    ({"argnums": 1.0}, r"argnums must be an int or a sequence of ints"),
    ({"argnums": "0"}, r"argnums must be an int or a sequence of ints"),
    ({"argnums": (0, True)}, r"argnums must be an int or a sequence of ints"),
    ({"argnums": (0, 0)}, r"argnums holds duplicates: \(0, 0\)"),
    ({"argnums": ()}, r"argnums is empty"),
    ({"rtol": 0.0}, r"rtol must be a finite number > 0"),
    ({"rtol": -1e-3}, r"rtol must be a finite number > 0"),
    ({"rtol": float("nan")}, r"rtol must be a finite number > 0"),
    ({"rtol": True}, r"rtol must be a finite number > 0; got True \(expected a Python or NumPy number"),
    ({"rtol": "1e-6"}, r"rtol must be a finite number > 0"),
    ({"atol": -1.0}, r"atol must be a finite number >= 0"),
    ({"atol": np.inf}, r"atol must be a finite number >= 0"),
    ({"atol": np.ones(2)}, r"atol must be a finite number >= 0"),
    ({"fd_rtol": 0}, r"fd_rtol must be a finite number > 0"),
    ({"fd_rtol": False}, r"fd_rtol must be a finite number > 0"),
    ({"seed": 1.5}, r"seed must be an int; got 1\.5"),
    ({"seed": True}, r"seed must be an int; got True"),
    ({"seed": "0"}, r"seed must be an int"),
])
def test_check_vjp_options_are_validated_naming_the_argument(kwargs, match):
    x = jnp.asarray([1.0, -2.0])
    for check in (check_vjp, assert_vjp_matches):
        with pytest.raises(ValueError, match=rf"^check_vjp: {match}"):
            check(_square_sum, _square_sum, (x,), **kwargs)


def test_check_vjp_refuses_non_callables_and_bare_arrays_for_args():
    x = jnp.asarray([1.0, -2.0])
    with pytest.raises(ValueError, match=r"^check_vjp: fn must be a callable; got int"):
        check_vjp(3, _square_sum, (x,))
    with pytest.raises(ValueError, match=r"^check_vjp: reference must be a callable; got ArrayImpl"):
        check_vjp(_square_sum, x, (x,))
    with pytest.raises(ValueError, match=r"^check_vjp: args must be a tuple or list .*; got ArrayImpl\. "
                                         r"For a single array x pass \(x,\)"):
        check_vjp(_square_sum, _square_sum, x)


def test_rel_err_and_assert_close_name_themselves_and_validate_tolerances():
    a = jnp.ones(2)
    with pytest.raises(ValueError, match=r"^assert_close: shapes differ: \(2,\) vs \(3,\)"):
        assert_close(a, jnp.ones(3), 1e-3)
    with pytest.raises(ValueError, match=r"^rel_err: shapes differ"):
        rel_err(a, jnp.ones(3))
    for other in ((a, a), [a], {"a": a}):
        with pytest.raises(ValueError, match=r"^rel_err: the trees differ in structure"):
            rel_err((a,), other)
    for kwargs, match in [({"rtol": -1.0}, r"rtol must be a finite number >= 0"), ({"rtol": True}, r"rtol must be"),
                          ({"rtol": float("nan")}, r"rtol must be"), ({"rtol": 1e-3, "atol": -1.0}, r"atol must be"),
                          ({"rtol": 1e-3, "atol": "0"}, r"atol must be")]:
        with pytest.raises(ValueError, match=rf"^assert_close: {match}"):
            assert_close(a, a, **kwargs)
    assert_close(a, a, np.float64(0.0), atol=np.array(0.0))  # exact comparison; NumPy and 0-d tolerances


@pytest.mark.parametrize("mistake", [None, *MISTAKES])
def test_gradcheck_cli_reports_registered_rules(mistake, capsys):
    name = f"test_one_layer_{mistake}"
    register_rule(RuleSpec(name, "test", _one_layer_classifier(mistake), _reference, _sample), overwrite=True)
    try:
        code = cli.main(["gradcheck", "--rule", name, "--seeds", "1"])
    finally:
        unregister_rule(name)
    out = capsys.readouterr().out
    assert code == (0 if mistake is None else 1)
    assert ("gradcheck: 1 passed, 0 failed" if mistake is None else "gradcheck: 0 passed, 1 failed") in out
    assert name in out


def test_gradcheck_cli_unknown_rule_is_a_clear_error(capsys):
    assert cli.main(["gradcheck", "--rule", "nope"]) == 2
    assert re.search(r"unknown rule 'nope'; registered rules: .*fcnn_regression", capsys.readouterr().err)


def test_check_vjp_names_fn_and_reference_when_their_outputs_differ():
    x = jnp.ones((3, 2))

    def pair(x):
        return jnp.sum(x), x

    with pytest.raises(ValueError, match=r"check_vjp: fn \(.*pair\) returns .* but reference \(.*sum.*\) returns"):
        check_vjp(pair, jnp.sum, (x,))
    with pytest.raises(ValueError, match=r"output leaf 0 of fn \(.*<lambda>\) has shape \(2,\) but the reference's "
                                         r"\(.*<lambda>\) has shape \(3,\)"):
        check_vjp(lambda x: jnp.sum(x, axis=0), lambda x: jnp.sum(x, axis=1), (x,))


def test_gradcheck_refuses_to_check_nothing(capsys):
    assert cli.main(["gradcheck", "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"seeds must be an int >= 1"):
        run_gradcheck(["softmax"], "float64", seeds=0)


# --------------------------------------------------------------------------------------------
# assert_grads_match, assert_tree_shapes_and_dtypes, count_traces: each passes and each can fail


def _as_params(loss):
    """The classifier of a parameter dict, so that failures name the leaf by its tree path."""
    return lambda params, X, Y: loss(params["W"], params["b"], X, Y)


def _params_case(dtype=jnp.float64):
    W, b, X, Y = _sample(jax.random.PRNGKey(5), dtype)
    return {"W": W, "b": b}, X, Y


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_assert_grads_match_passes_a_correct_rule(dtype):
    assert_grads_match(_as_params(_one_layer_classifier(None)), _as_params(_reference), _params_case(dtype))


@pytest.mark.parametrize("mistake, leaf", [("flipped_sign", "W"), ("missing_1_over_N", "W"), ("transposed_weight", "W"),
                                           ("dropped_bias", "b")])
def test_assert_grads_match_names_the_wrong_leaf(mistake, leaf):
    with pytest.raises(AssertionError, match=rf"^classifier: gradient \['{leaf}'\]: max relative error"):
        assert_grads_match(_as_params(_one_layer_classifier(mistake)), _as_params(_reference), _params_case(),
                           what="classifier")


def test_assert_grads_match_fails_a_gradient_in_the_wrong_dtype():
    """A custom_vjp may return a float32 cotangent for a float64 argument (JAX lets it through): the
    values agree to float32 rounding, but the gradient must have its argument's dtype."""

    @jax.custom_vjp
    def square_sum(x):
        return jnp.sum(x * x)

    square_sum.defvjp(lambda x: (square_sum(x), x), lambda x, g: ((2 * g * x).astype(jnp.float32),))
    x = jnp.asarray([1.0, -2.0, 0.5])  # exact in float32: only the dtype is wrong
    with pytest.raises(AssertionError, match=r"^gradients vs arguments: .*float32 != float64"):
        assert_grads_match(square_sum, _square_sum, (x,))


def test_assert_grads_match_checks_its_options_naming_them():
    x = jnp.asarray([1.0, -2.0])
    with pytest.raises(ValueError, match=r"^assert_grads_match: args must be a tuple or list"):
        assert_grads_match(_square_sum, _square_sum, x)
    with pytest.raises(ValueError, match=r"^assert_grads_match: argnums holds 1, but args has 1 entries"):
        assert_grads_match(_square_sum, _square_sum, (x,), argnums=1)
    with pytest.raises(ValueError, match=r"^assert_grads_match: rtol must be a finite number > 0"):
        assert_grads_match(_square_sum, _square_sum, (x,), rtol=0.0)
    with pytest.raises(ValueError, match=r"^assert_grads_match: args hold no floating arrays"):
        assert_grads_match(_square_sum, _square_sum, (jnp.arange(2),))


def test_assert_tree_shapes_and_dtypes_passes_equal_trees_and_shape_structs():
    tree = {"W": jnp.ones((2, 3)), "b": jnp.zeros(3, jnp.float32)}
    assert_tree_shapes_and_dtypes(tree, jax.eval_shape(lambda t: t, tree))
    assert_tree_shapes_and_dtypes(tree, {"W": np.zeros((2, 3)), "b": np.ones(3, np.float32)})


@pytest.mark.parametrize("expected, match", [
    ({"W": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(3)}, r"'W'.*float64 != float32"),
    ({"W": jnp.ones((3, 2)), "b": jnp.zeros(3)}, r"'W'.*shapes: \(2, 3\) != \(3, 2\)"),
    ({"W": jnp.ones((2, 3)), "c": jnp.zeros(3)}, r"tree structs"),
])
def test_assert_tree_shapes_and_dtypes_fails_naming_the_leaf(expected, match):
    actual = {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    with pytest.raises(AssertionError, match=rf"(?s)^params: .*{match}"):
        assert_tree_shapes_and_dtypes(actual, expected, what="params")


def test_assert_tree_shapes_and_dtypes_without_chex_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "chex", None)  # `import chex` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'mdc-jax\[test\]'"):
        assert_tree_shapes_and_dtypes(jnp.ones(2), jnp.ones(2))


def test_count_traces_sees_a_program_traced_again_for_new_values():
    def scale(x, s):
        return x * s

    x = jnp.ones(3)
    by_value, static = jax.jit(scale), jax.jit(scale, static_argnums=1)  # static: a new s is a new program
    with count_traces() as traces:
        for s in (1.0, 2.0, 3.0):
            by_value(x, s)
    assert traces["scale"] == 1  # compiled once: a "traces once" check passes
    with count_traces() as traces:
        for s in (1.0, 2.0, 3.0):
            static(x, s)
    assert traces["scale"] == 3  # traced for each new value: a "traces once" check fails
    with count_traces() as traces:
        by_value(jnp.ones(4), 1.0)  # a new shape is traced again, as it must be
    assert traces["scale"] == 1 and traces.total >= 1
    static(x, 5.0)
    assert traces["scale"] == 1 and traces["never_called"] == 0  # the listener is gone after the block


def test_count_traces_counts_top_level_traces_only():
    inner = jax.jit(lambda x: 2 * x)

    def outer(x):
        return inner(x) + 1

    with count_traces() as traces:
        jax.jit(outer)(jnp.ones(2))
    assert traces["outer"] == 1 and traces["<lambda>"] == 0
