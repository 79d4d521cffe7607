"""Specification of mdc_jax.per_example: per-example gradients, norms, statistics and clipping from the
closed-form backward, against jax.vmap(jax.grad) of the plain references (mdc_jax.reference.per_example)."""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mdc_jax
from mdc_jax import per_example as pe
from mdc_jax.reference import per_example as ref
from mdc_jax.reference.fcnn import mlp_case
from mdc_jax.reference.rnn import rnn_case
from mdc_jax.rules import per_example as rules
from mdc_jax.rules.per_example import _clip, fcnn, head, rnn

from .helpers import assert_close

ALL = pe.QUANTITIES
F64, F32 = 1e-10, 1e-4


def fcnn_setup(seed, n, dims, task, dtype, one_hot=True):
    params, X, Y = mlp_case(seed, n, dims, dtype, task=task, one_hot=one_hot)
    hidden = ["tanh", "relu", "softplus", "sigmoid"][: len(dims) - 2]
    acts = hidden if task == "classification" else [*hidden, "identity"]
    return params, X, Y, acts


def fcnn_expected(params, X, Y, acts, task, l2):
    bg = ref.fcnn_batch_grads(params, X, Y, acts, task=task)
    loss = (mdc_jax.reference.fcnn_classification_loss if task == "classification"
            else mdc_jax.reference.fcnn_regression_loss)(params, X, Y, acts, l2)
    return {"loss": loss, **ref.quantities_from_batch_grads(bg, ref.fcnn_penalty_grad(params, l2))}, bg


def assert_quantities(got, expected, rtol, what, quantities=ALL):
    assert set(got) == {"loss", "grad", *quantities}, set(got)
    for name in got:
        assert_close(got[name], expected[name], rtol, f"{what}: {name}", atol=rtol * 1e-3)


@st.composite
def fcnn_shapes(draw):
    layers = draw(st.integers(1, 3))
    task = draw(st.sampled_from(["classification", "regression"]))
    dims = [draw(st.integers(1, 6)) for _ in range(layers + 1)]
    if task == "classification":
        dims[-1] = max(dims[-1], 2)
    return draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 7)), dims, task, draw(st.booleans())


def fcnn_both_ways(params, X, Y, acts, task, l2, clip_norm):
    """The closed forms and their vmap-of-grad references, compiled as one program (one compile per shape)."""

    def run(params, X, Y):
        got = pe.fcnn_quantities(params, X, Y, acts, l2, task=task, quantities=ALL)
        clipped = pe.fcnn_clipped_grad(params, X, Y, acts, l2, task=task, clip_norm=clip_norm)
        expected, bg = fcnn_expected(params, X, Y, acts, task, l2)
        loss = mdc_jax.fcnn_classification_loss if task == "classification" else mdc_jax.fcnn_regression_loss
        return (got, clipped, expected, ref.clipped_from_batch_grads(bg, clip_norm, None, ref.fcnn_penalty_grad(params, l2)),
                jax.grad(loss)(params, X, Y, acts, l2))

    return jax.jit(run)(params, X, Y)


@settings(max_examples=8)
@given(fcnn_shapes(), st.sampled_from([0.0, 0.3]), st.sampled_from([1e-3, 0.3, 1e6]))
@example((0, 1, [1, 2], "classification", True), 0.0, 0.3)  # N = 1, one layer
@example((1, 1, [3, 1], "regression", True), 0.5, 1e6)  # N = 1, one output, nothing clipped
def test_fcnn_quantities_and_clipping_match_vmap_of_grad_float64(setup, l2, clip_norm):
    seed, n, dims, task, one_hot = setup
    params, X, Y, acts = fcnn_setup(seed, n, dims, task, jnp.float64, one_hot)
    got, (loss, clipped), expected, expected_clipped, rule_grad = fcnn_both_ways(params, X, Y, acts, task, l2, clip_norm)
    what = f"{task} {dims} N={n}"
    assert_quantities(got, expected, F64, what)
    assert_close(got["grad"], rule_grad, F64, f"{what}: grad vs jax.grad of the rule")
    assert_close(loss, expected["loss"], F64, f"{what}: clipped loss")
    assert_close(clipped, expected_clipped, F64, f"{what}: clipped at {clip_norm}", atol=1e-13)
    if clip_norm == 1e6:  # no example is clipped: the plain gradient
        assert_close(clipped, expected["grad"], F64, f"{what}: huge clip_norm")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fcnn_quantities_float32_and_under_jit(task):
    params, X, Y, acts = fcnn_setup(3, 9, [5, 7, 4, 3], task, jnp.float32)
    f = jax.jit(lambda p, X, Y: pe.fcnn_quantities(p, X, Y, acts, 0.01, task=task, quantities=ALL))
    got = f(params, X, Y)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got))
    p64, X64, Y64 = jax.tree.map(lambda a: a.astype(jnp.float64), (params, X, Y))
    expected, _ = jax.jit(lambda p, X, Y: fcnn_expected(p, X, Y, acts, task, 0.01))(p64, X64, Y64)
    assert_quantities(got, expected, F32, f"{task} float32")


def test_per_parameter_results_keep_the_structure_of_params():
    params, X, Y, acts = fcnn_setup(0, 4, [3, 2, 2], "classification", jnp.float64)
    as_lists = [list(layer) for layer in params]
    got = pe.fcnn_quantities(as_lists, X, Y, acts, quantities=("batch_l2", "batch_grad"))
    assert jax.tree.structure(got["grad"]) == jax.tree.structure(as_lists)
    assert [g.shape for g in jax.tree.leaves(got["batch_grad"])] == [(4, 3, 2), (4, 2), (4, 2, 2), (4, 2)]
    assert [g.shape for g in jax.tree.leaves(got["batch_l2"])] == [(4,)] * 4
    assert set(pe.fcnn_quantities(params, X, Y, acts, quantities=())) == {"loss", "grad"}


@st.composite
def rnn_shapes(draw):
    return (draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 9)), draw(st.integers(1, 4)),
            draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(2, 5)), draw(st.booleans()))


def rnn_expected(params, Z0, X, Y):
    bg = ref.rnn_batch_grads(params, Z0, X, Y)
    return {"loss": mdc_jax.reference.rnn_loss(params, Z0, X, Y), **ref.quantities_from_batch_grads(bg)}, bg


@settings(max_examples=4)
@given(rnn_shapes(), st.sampled_from(["by shape", "ghost", "materialised"]), st.sampled_from([1e-2, 1.0, 1e6]))
@example((0, 1, 1, 1, 1, 2, True), "by shape", 1.0)  # τ = 1, N = 1
@example((5, 7, 3, 2, 8, 3, False), "ghost", 1e6)  # τ = 7 (prime: one step per chunk), nothing clipped
@example((6, 4, 2, 3, 3, 2, True), "materialised", 1e-2)
def test_rnn_quantities_and_clipping_match_vmap_of_grad_float64(monkeypatch, setup, norm, clip_norm):
    seed, tau, n, d, h, k, one_hot = setup
    if norm != "by shape":  # both ways of taking ‖Σ_t a_t b_tᵀ‖ are exact
        monkeypatch.setattr(rnn, "use_ghost_norm", lambda *a: norm == "ghost")
    params, Z0, X, Y = rnn_case(seed, tau, n, d, h, k, jnp.float64, one_hot=one_hot)

    def run(params, Z0, X, Y):
        expected, bg = rnn_expected(params, Z0, X, Y)
        return (pe.rnn_quantities(params, Z0, X, Y, quantities=ALL), pe.rnn_clipped_grad(params, Z0, X, Y, clip_norm=clip_norm),
                expected, ref.clipped_from_batch_grads(bg, clip_norm), jax.grad(mdc_jax.rnn_loss)(params, Z0, X, Y))

    got, (loss, clipped), expected, expected_clipped, rule_grad = jax.jit(run)(params, Z0, X, Y)
    what = f"rnn τ={tau} N={n} D={d} H={h} K={k} ({norm})"
    assert_quantities(got, expected, F64, what)
    assert isinstance(got["grad"], mdc_jax.RNNParams) and isinstance(got["batch_l2"], mdc_jax.RNNParams)
    assert_close(got["grad"], rule_grad, F64, f"{what}: grad vs jax.grad of the rule")
    assert_close(loss, expected["loss"], F64, f"{what}: clipped loss")
    assert_close(clipped, expected_clipped, F64, f"{what}: clipped at {clip_norm}", atol=1e-13)
    if clip_norm == 1e6:
        assert_close(clipped, expected["grad"], F64, f"{what}: huge clip_norm")


def test_rnn_quantities_float32_under_jit():
    params, Z0, X, Y = rnn_case(2, 6, 5, 3, 6, 4, jnp.float32)
    got = jax.jit(lambda *a: pe.rnn_quantities(*a, quantities=ALL))(params, Z0, X, Y)
    expected, _ = jax.jit(rnn_expected)(*jax.tree.map(lambda a: a.astype(jnp.float64), (params, Z0, X, Y)))
    assert_quantities(got, expected, F32, "rnn float32")


@st.composite
def token_cases(draw):
    """Token ids and integer labels, either head, the fused head's options and blocks (vocabularies larger
    than one block), an ignored label."""
    tau, n, h = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    d, k = draw(st.integers(1, 7)), draw(st.integers(2, 9))
    fused = draw(st.booleans())
    options = draw(st.fixed_dictionaries({}, optional={"z_loss": st.sampled_from([0.0, 0.3]),
                                                       "label_smoothing": st.sampled_from([0.0, 0.2]),
                                                       "softcap": st.sampled_from([None, 1.5])})) if fused else None
    blocks = draw(st.sampled_from([None, (3, 2), (5, 4)])) if fused else None
    ignore = draw(st.sampled_from([None, 0]))
    return draw(st.integers(0, 2**31 - 1)), tau, n, d, h, k, fused, options or None, blocks, ignore


def token_setup(seed, tau, n, d, h, k, dtype):
    params, Z0, _, _ = rnn_case(seed, 1, n, d, h, k, dtype)
    rng = np.random.default_rng(seed)
    return params, Z0, jnp.asarray(rng.integers(0, d, (tau, n))), jnp.asarray(rng.integers(0, k, (tau, n)))


@settings(max_examples=1)  # the explicit examples cover the edges; one drawn case (more: the thorough profile)
@given(token_cases(), st.sampled_from([0.05, 1e6]))
@example((0, 1, 1, 1, 1, 2, True, None, (1, 1), None), 0.05)  # τ = N = 1, K = 2, one-column blocks
@example((1, 5, 3, 4, 3, 9, True, {"z_loss": 0.1, "label_smoothing": 0.1, "softcap": 2.0}, (4, 2), 0), 0.05)
@example((2, 4, 4, 6, 2, 5, False, None, None, 2), 1e6)
def test_token_ids_and_the_fused_head_match_vmap_of_grad_float64(case, clip_norm):
    seed, tau, n, d, h, k, fused, options, blocks, ignore = case
    params, Z0, X, Y = token_setup(seed, tau, n, d, h, k, jnp.float64)
    head_kw = dict(head="fused", block_size=blocks, head_options=options) if fused else {}
    kw = dict(ignore_index=ignore, **head_kw)
    quantities = ("batch_l2", "grad_norm") if fused else ALL
    weights = jnp.asarray(np.random.default_rng(seed).uniform(0, 2, n))

    def run(params, Z0, X, Y):
        bg = ref.rnn_batch_grads(params, Z0, X, Y, ignore_index=ignore, head_options=options)
        expected = {"loss": mdc_jax.reference.rnn_loss(params, Z0, X, Y, ignore_index=ignore, head_options=options),
                    **ref.quantities_from_batch_grads(bg)}
        return (pe.rnn_quantities(params, Z0, X, Y, quantities=quantities, **kw),
                pe.rnn_clipped_grad(params, Z0, X, Y, clip_norm=clip_norm, weights=weights, **kw),
                {q: expected[q] for q in ("loss", "grad", *quantities)},
                ref.clipped_from_batch_grads(bg, clip_norm, weights))

    got, (loss, clipped), expected, expected_clipped = jax.jit(run)(params, Z0, X, Y)
    what = f"ids τ={tau} N={n} D={d} H={h} K={k} fused={fused} {options} blocks={blocks} ignore={ignore}"
    assert_quantities(got, expected, F64, what, quantities)
    assert_close(clipped, expected_clipped, F64, f"{what}: clipped at {clip_norm}", atol=1e-13)
    ell = jax.vmap(lambda z, x, y: mdc_jax.reference.rnn_loss(params, z[None], x[:, None], y[:, None], ignore_index=ignore,
                                                             head_options=options), in_axes=(0, 1, 1))(Z0, X, Y)
    assert_close(loss, jnp.mean(weights * ell), F64, f"{what}: the weighted loss")


def test_token_ids_and_the_fused_head_float32_under_jit():
    params, Z0, X, Y = token_setup(3, 5, 4, 7, 6, 11, jnp.float32)
    kw = dict(head="fused", block_size=(8, 4), head_options={"z_loss": 1e-2, "softcap": 5.0})
    got = jax.jit(lambda *a: pe.rnn_clipped_grad(*a, clip_norm=0.1, **kw))(params, Z0, X, Y)
    p64, Z64 = jax.tree.map(lambda a: a.astype(jnp.float64), (params, Z0))
    bg = ref.rnn_batch_grads(p64, Z64, X, Y, head_options=kw["head_options"])
    expected = ref.clipped_from_batch_grads(bg, 0.1)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(got[1]))
    assert_close(got[1], expected, F32, "float32 ids + fused head, clipped")


@pytest.mark.parametrize("tau, k, ids", [(7, 3, False), (6, 2, True), (1, 1, True)])
def test_checkpoint_every_materialises_g_i_segment_by_segment_float64(tau, k, ids):
    """Segments recomputed from every k-th state (the last one shorter where k does not divide τ): the same
    quantities and clipped gradient as without, to 1e-12."""
    if ids:
        params, Z0, X, Y = token_setup(tau, tau, 3, 5, 4, 3, jnp.float64)
    else:
        params, Z0, X, Y = rnn_case(tau, tau, 3, 4, 5, 3, jnp.float64)
    w = jnp.asarray([0.0, 1.0, 2.5])

    def run(params, Z0, X, Y):
        both = lambda **kw: (pe.rnn_quantities(params, Z0, X, Y, quantities=ALL, **kw),
                             pe.rnn_clipped_grad(params, Z0, X, Y, clip_norm=0.3, weights=w, **kw))
        return both(checkpoint_every=k), both()

    got, expected = jax.jit(run)(params, Z0, X, Y)
    assert_close(got, expected, 1e-12, f"checkpoint_every={k}, τ={tau}, ids={ids}", atol=1e-15)


def test_no_array_of_the_logits_or_the_one_hot_inputs_is_formed():
    """τ·N·K floats would be 2 MiB here; the compiled clipped gradient's temp stays below a quarter of it."""
    tau, n, h, k = 8, 8, 8, 8192
    params, Z0, X, Y = token_setup(0, tau, n, k, h, k, jnp.float32)
    f = lambda *a: pe.rnn_clipped_grad(*a, clip_norm=1.0, head="fused", block_size=(64, 512))
    temp = jax.jit(f).lower(params, Z0, X, Y).compile().memory_analysis().temp_size_in_bytes
    assert temp < tau * n * k * 4 / 4, f"temp {temp} bytes; τNK floats are {tau * n * k * 4}"


def test_token_bad_input_raises_naming_the_argument():
    params, Z0, X, Y = token_setup(0, 3, 2, 4, 3, 5, jnp.float64)
    cases = [
        (dict(X=X.at[1, 0].set(4)), r"rnn_clipped_grad: X must hold token \(row of U\) indices in \[0, 4\).*"
                                    r"first at index \(1, 0\)"),
        (dict(Y=Y.at[2, 1].set(7)), r"rnn_clipped_grad: Y must hold class indices in \[0, 5\).*first at index \(2, 1\)"),
        (dict(checkpoint_every=2, head="fused"), r"rnn_clipped_grad: checkpoint_every=2 with head='fused'"),
        (dict(checkpoint_every=0), r"rnn_clipped_grad: checkpoint_every must be"),
        (dict(checkpoint_every=4), r"rnn_clipped_grad: checkpoint_every must be at most X's steps, 3; got 4"),
        (dict(head_options={"z_loss": 0.1}), r"head_options applies to head='fused' only"),
        (dict(head="fused", head_options={"z_loss": -1.0}), r"z_loss.* >= 0"),
        (dict(head="fused", head_options={"label_smoothing": 1.0}), r"label_smoothing'\] must be a number in \[0, 1\)"),
        (dict(head="fused", head_options={"softcap": 0.0}), r"softcap'\] must be None or a finite number > 0"),
        (dict(head="tied"), r"head must be one of"),
    ]
    for kw, match in cases:
        args = dict(X=X, Y=Y)
        args.update({key: kw.pop(key) for key in ("X", "Y") if key in kw})
        with pytest.raises(ValueError, match=match):
            pe.rnn_clipped_grad(params, Z0, args["X"], args["Y"], clip_norm=1.0, **kw)
    with pytest.raises(ValueError, match=r"rnn_quantities: quantities \['batch_grad'\] materialise N copies of V"):
        pe.rnn_quantities(params, Z0, X, Y, head="fused", quantities=("batch_grad",))
    soft = jax.nn.one_hot(Y, 5, dtype=jnp.float64)
    with pytest.raises(ValueError, match=r"rnn_quantities: ignore_index applies to integer labels Y only"):
        pe.rnn_quantities(params, Z0, X, soft, ignore_index=0)


def test_the_mixed_ghost_norm_picks_the_cheaper_way_by_shape():
    assert rules.use_ghost_norm(50, 256, 256)  # the benchmark's RNN: τ² (d_a + d_b) < τ d_a d_b
    assert not rules.use_ghost_norm(1000, 8, 8)  # long sequences of small states: materialise
    assert not rules.use_ghost_norm(1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Clipping


def test_clipping_bounds_every_example_and_leaves_a_zero_gradient_alone():
    params, X, Y, acts = fcnn_setup(4, 6, [3, 4, 1], "regression", jnp.float64)
    Y = Y.at[2].set(mdc_jax.fcnn_forward(params, X, acts)[2])  # example 2 fits exactly: g_2 = 0
    norms = pe.fcnn_quantities(params, X, Y, acts, task="regression")["grad_norm"]
    assert norms[2] == 0 and jnp.all(norms[jnp.arange(6) != 2] > 0.05)
    C = 0.5 * float(jnp.min(norms[norms > 0]))
    # One example at a time: each clipped gradient has norm exactly C (or 0 for example 2).
    for i in range(6):
        w = jnp.zeros(6).at[i].set(6.0)
        _, g = pe.fcnn_clipped_grad(params, X, Y, acts, task="regression", clip_norm=C, weights=w)
        norm = float(jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g))))
        assert np.isfinite(norm) and norm == pytest.approx(0.0 if i == 2 else C, rel=1e-12, abs=1e-300)


def test_weights_mask_rows_out_as_if_they_were_not_there():
    params, X, Y, acts = fcnn_setup(5, 7, [4, 3, 3], "classification", jnp.float64)
    keep = np.array([1, 0, 1, 1, 0, 0, 1], bool)
    w = jnp.asarray(keep * (7 / keep.sum()))  # padding rows out, the mean over the kept ones
    # Compiled (one program per shape), as in a DP step; clip_norm and l2 stay concrete.
    fcnn = jax.jit(lambda X, Y, w: pe.fcnn_clipped_grad(params, X, Y, acts, 0.2, clip_norm=0.7, weights=w))
    masked = fcnn(X, Y, w)
    alone = fcnn(X[keep], Y[keep], None)
    assert_close(masked, alone, F64, "masked vs the kept rows alone")
    p, Z0, Xr, Yr = rnn_case(1, 4, 5, 2, 3, 3, jnp.float64)
    keep = np.array([0, 1, 1, 0, 1], bool)
    w = jnp.asarray(keep * (5 / keep.sum()))
    rnn = jax.jit(lambda Z0, X, Y, w: pe.rnn_clipped_grad(p, Z0, X, Y, clip_norm=0.4, weights=w))
    masked = rnn(Z0, Xr, Yr, w)
    alone = rnn(Z0[keep], Xr[:, keep], Yr[:, keep], None)
    assert_close(masked, alone, F64, "rnn masked vs the kept sequences alone")


def test_clipped_grad_under_jit_with_a_traced_clip_norm():
    params, X, Y, acts = fcnn_setup(6, 8, [3, 5, 2], "classification", jnp.float32)
    f = jax.jit(lambda p, C: pe.fcnn_clipped_grad(p, X, Y, acts, clip_norm=C))
    for C in (0.1, 1.0):
        assert_close(f(params, jnp.float32(C)), pe.fcnn_clipped_grad(params, X, Y, acts, clip_norm=C), 1e-6, f"C={C}")


def test_an_integer_l2_is_cast_to_the_computation_dtype():
    params, X, Y, acts = fcnn_setup(8, 5, [3, 4, 2], "classification", jnp.float32)
    a = jax.jit(lambda l2: pe.fcnn_clipped_grad(params, X, Y, acts, l2, clip_norm=0.5))(jnp.asarray(1, jnp.int32))
    b = pe.fcnn_clipped_grad(params, X, Y, acts, 1.0, clip_norm=0.5)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(a))
    assert_close(a, b, 1e-6, "integer l2")


def test_numpy_inputs_and_numpy_scalars_are_accepted():
    params, X, Y, acts = fcnn_setup(7, 5, [3, 4, 2], "classification", jnp.float64)
    np_params = [(np.asarray(W), np.asarray(b)) for W, b in params]
    a = pe.fcnn_clipped_grad(np_params, np.asarray(X), np.asarray(Y), tuple(acts), np.float64(0.1),
                             clip_norm=np.float64(0.5), weights=np.ones(5))
    b = pe.fcnn_clipped_grad(params, X, Y, acts, 0.1, clip_norm=0.5)
    assert_close(a, b, F64, "numpy vs jax inputs")


# ---------------------------------------------------------------------------------------------
# Bad input and honesty


@pytest.mark.parametrize("call, match", [
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=0.0), r"fcnn_clipped_grad: clip_norm must be a finite number > 0; got 0\.0"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=-1), r"clip_norm must be a finite number > 0; got -1"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=jnp.asarray(np.nan)), r"clip_norm must be a finite number > 0"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=jnp.ones(2)), r"clip_norm must be a scalar; got shape \(2,\)"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=True), r"clip_norm must be a number > 0; got True"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=None), r"clip_norm is required"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=1.0, weights=-jnp.ones(4)),
     r"weights must hold finite values >= 0 \(0 masks a row out\); weights contains 4 negative"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=1.0, weights=jnp.full(4, jnp.inf)),
     r"fcnn_clipped_grad: weights must hold finite values >= 0 .*weights contains 4 negative or non-finite value\(s\) "
     r"\(first at row 0, value inf\)"),
    (lambda a: pe.fcnn_clipped_grad(*a, clip_norm=1.0, weights=jnp.ones(3)), r"weights has shape \(3,\); expected \(4,\)"),
    (lambda a: pe.fcnn_quantities(*a, quantities=("batch_l2", "hessian")), r"quantities: unknown quantity 'hessian'"),
    (lambda a: pe.fcnn_quantities(*a, quantities="batch_l2"), r"quantities must be a sequence of names"),
    (lambda a: pe.fcnn_quantities(*a, task="ranking"), r"task must be one of \('classification', 'regression'\); got 'ranking'"),
    (lambda a: pe.fcnn_quantities(*a, task="regression"), r"activations has 1 entries; expected 2"),
    (lambda a: pe.fcnn_quantities(a[0], a[1][:, :2], *a[2:]), r"params\[0\]\[0\] \(W_1\) has shape \(3, 2\)"),
    (lambda a: pe.fcnn_quantities(a[0], a[1], a[2], a[3], -1.0), r"l2 must be a finite number >= 0"),
    (lambda a: pe.fcnn_clipped_grad(a[0], a[1], -a[2], a[3], clip_norm=1.0), r"fcnn_clipped_grad: Y must hold non-negative"),
])
def test_bad_input_raises_naming_the_argument(call, match):
    params, X, Y, acts = fcnn_setup(0, 4, [3, 2, 2], "classification", jnp.float64)
    with pytest.raises(ValueError, match=match):
        call((params, X, Y, acts))


def test_rnn_bad_input_raises_naming_the_argument():
    params, Z0, X, Y = rnn_case(0, 3, 2, 2, 3, 2, jnp.float64)
    with pytest.raises(ValueError, match=r"rnn_clipped_grad: clip_norm must be a finite number > 0"):
        pe.rnn_clipped_grad(params, Z0, X, Y, clip_norm=-0.5)
    with pytest.raises(ValueError, match=r"rnn_clipped_grad: weights must hold finite values >= 0 .*value inf"):
        pe.rnn_clipped_grad(params, Z0, X, Y, clip_norm=1.0, weights=jnp.array([1.0, jnp.inf]))
    with pytest.raises(ValueError, match=r"rnn_quantities: quantities: unknown quantity 'norms'"):
        pe.rnn_quantities(params, Z0, X, Y, quantities=["norms"])
    with pytest.raises(ValueError, match=r"rnn_quantities: Y has shape \(3, 1, 2\); expected \(3, 2, 2\)"):
        pe.rnn_quantities(params, Z0, X, Y[:, :1])


def test_the_closed_forms_never_call_autodiff():
    source = "".join(inspect.getsource(m) for m in (rules, _clip, fcnn, head, rnn))
    calls = re.findall(r"(?<![\w])(?:jax\.)?(?:grad|vjp|vmap|jacrev|jacfwd|linearize|hessian|value_and_grad)\(", source)
    assert not calls, calls
    params, X, Y, acts = fcnn_setup(0, 4, [3, 2, 2], "classification", jnp.float64)
    jaxpr = str(jax.make_jaxpr(lambda p: pe.fcnn_clipped_grad(p, X, Y, acts, clip_norm=1.0))(params))
    assert "custom_vjp_call" not in jaxpr  # built from the rows of S, not by differentiating the rule
