"""Specification of mdc_jax.curvature: GGN-vector products, GGN and Hessian diagonals and Kronecker factors
from the closed forms, against the explicit GGN and Hessian of mdc_jax.reference.curvature (jax.jacfwd and
jax.hessian of the plain forwards)."""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mdc_jax
from mdc_jax import curvature as curv
from mdc_jax.reference import curvature as ref
from mdc_jax.reference.fcnn import mlp_case
from mdc_jax.reference.rnn import rnn_case
from mdc_jax.rules import curvature as rules

from .helpers import assert_close

F64, F32 = 1e-10, 1e-4
ACTIVATIONS = ("tanh", "sigmoid", "softplus", "relu", "identity")
EXACT = ("diag_ggn", "batch_diag_ggn", "kflr")  # the Monte-Carlo ones: test_*_unbiased_*, test_float32_*


def scale_rows(Y, seed):
    """Soft label rows whose sums differ from 1 (``H_i`` carries ``1ᵀy_i``): each row times a factor in [0.2, 3]."""
    w = np.random.default_rng(seed).uniform(0.2, 3.0, (*Y.shape[:-1], 1))
    return Y * jnp.asarray(w, Y.dtype)


def fcnn_setup(seed, n, dims, task, acts, dtype=jnp.float64, scaled=True):
    params, X, Y = mlp_case(seed, n, dims, dtype, task=task, one_hot=False)
    if task == "classification" and scaled:
        Y = scale_rows(Y, seed)
    return params, X, Y, list(acts)


def random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), tree)


def rel_norm(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` over all leaves together."""
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


def assert_kron_blocks(kflr, G, params, what):
    """``kron(A_j, B_j)`` is ``G``'s block of each weight (exact at N = 1), ``B_j`` its bias block."""
    for j, (((A, B), Bb), (GW, Gb)) in enumerate(zip(kflr, ref.blocks(G, params))):
        assert_close(jnp.kron(A, B), GW, F64, f"{what}: kron(A_{j + 1}, B_{j + 1}) vs G's W_{j + 1} block", atol=1e-14)
        assert_close(Bb, Gb, F64, f"{what}: B_{j + 1} vs G's b_{j + 1} block", atol=1e-14)


# ---------------------------------------------------------------------------------------------
# FCNN: every exact quantity against the explicit GGN and Hessian


@st.composite
def fcnn_shapes(draw):
    layers = draw(st.integers(1, 3))
    task = draw(st.sampled_from(["classification", "regression"]))
    dims = [draw(st.integers(1, 4)) for _ in range(layers + 1)]
    if task == "classification":
        dims[-1] = max(dims[-1], 2)
    acts = [draw(st.sampled_from(ACTIVATIONS)) for _ in range(layers - (task == "classification"))]
    return draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 5)), dims, task, acts


def fcnn_both_ways(params, X, Y, acts, task, tangents):
    """The exact quantities, G·v, the rule's loss and jax.grad of it, and the references, as one program."""

    def run(params, X, Y, tangents):
        got = curv.fcnn_quantities(params, X, Y, acts, task=task, quantities=(*EXACT, "diag_hessian"))
        gv = curv.fcnn_ggn_vp(params, X, Y, acts, tangents, task=task)
        loss = mdc_jax.fcnn_classification_loss if task == "classification" else mdc_jax.fcnn_regression_loss
        Gs = ref.fcnn_batch_ggn(params, X, Y, acts, task=task)
        G = jnp.sum(Gs, axis=0)
        expected = {"loss": loss(params, X, Y, acts), "grad": jax.grad(loss)(params, X, Y, acts),
                    "diag_ggn": ref.diagonal(G, params), "batch_diag_ggn": ref.batch_diagonal(Gs, params),
                    "kflr": ref.fcnn_kflr(params, X, G, acts),
                    "diag_hessian": ref.diagonal(ref.fcnn_hessian(params, X, Y, acts, task=task), params)}
        return got, gv, expected, ref.ggn_vp(G, params, tangents), G

    return jax.jit(run)(params, X, Y, tangents)


@settings(max_examples=2)
@given(fcnn_shapes())
@example((0, 1, [3, 2], "classification", []))  # N = 1, K = 2, one layer
@example((1, 1, [2, 3, 1, 2], "regression", ["tanh", "relu", "sigmoid"]))  # N = 1, width 1, curved last activation
@example((2, 4, [1, 1, 2, 3], "classification", ["softplus", "identity"]))  # width 1
def test_fcnn_quantities_and_ggn_vp_match_the_explicit_ggn_and_hessian_float64(setup):
    """diag_ggn, batch_diag_ggn, kflr, diag_hessian, loss, grad and G·v against the references; at N = 1
    kron(A_j, B_j) is G's block of W_j (A_j from the forward pins B_j down, scale included), and for any N
    B_j is G's block of b_j (∂o_i/∂b_j = ∂o_i/∂a_{j,i}): the kflr reference is the bias block."""
    seed, n, dims, task, acts = setup
    params, X, Y, acts = fcnn_setup(seed, n, dims, task, acts)
    tangents = random_like(params, seed + 1)
    got, gv, expected, expected_gv, G = fcnn_both_ways(params, X, Y, acts, task, tangents)
    what = f"{task} {dims} {acts} N={n}"
    assert set(got) == {"loss", "grad", *EXACT, "diag_hessian"}, set(got)
    for name, value in expected.items():
        assert_close(got[name], value, F64, f"{what}: {name}", atol=1e-14)
    assert_close(gv, expected_gv, F64, f"{what}: ggn_vp", atol=1e-14)
    assert_close(jax.tree.map(lambda b: jnp.sum(b, axis=0), got["batch_diag_ggn"]), got["diag_ggn"], F64,
                 f"{what}: batch_diag_ggn summed over the batch", atol=1e-14)
    if n == 1:
        assert_kron_blocks(got["kflr"], G, params, what)


# ---------------------------------------------------------------------------------------------
# RNN


@st.composite
def rnn_shapes(draw):
    return (draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 5)), draw(st.integers(1, 3)),
            draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 3)))


def rnn_both_ways(params, Z0, X, Y, tangents):
    def run(params, Z0, X, Y, tangents):
        got = curv.rnn_quantities(params, Z0, X, Y, quantities=EXACT)
        gv = curv.rnn_ggn_vp(params, Z0, X, Y, tangents)
        Gs = ref.rnn_batch_ggn(params, Z0, X, Y)
        G = jnp.sum(Gs, axis=0)
        expected = {"loss": mdc_jax.rnn_loss(params, Z0, X, Y), "grad": jax.grad(mdc_jax.rnn_loss)(params, Z0, X, Y),
                    "diag_ggn": ref.diagonal(G, params), "batch_diag_ggn": ref.batch_diagonal(Gs, params),
                    "kflr": ref.rnn_kflr(params, Z0, X, Y)}
        return got, gv, expected, ref.ggn_vp(G, params, tangents), G

    return jax.jit(run)(params, Z0, X, Y, tangents)


@settings(max_examples=1)
@given(rnn_shapes())
@example((0, 1, 1, 1, 2, 2))  # τ = 1, N = 1, width 1 input, K = 2: kflr is exact
@example((5, 7, 2, 2, 3, 3))  # τ = 7, prime
def test_rnn_quantities_and_ggn_vp_match_the_explicit_ggn_float64(setup):
    """diag_ggn, batch_diag_ggn, kflr (its definitions: independence across time), loss, grad and G·v against
    the references; at τ = 1, N = 1 kron(A, B) is G's block of W, U and V."""
    seed, tau, n, d, h, k = setup
    params, Z0, X, Y = rnn_case(seed, tau, n, d, h, k, jnp.float64, one_hot=False)
    Y = scale_rows(Y, seed)
    tangents = random_like(params, seed + 1)
    got, gv, expected, expected_gv, G = rnn_both_ways(params, Z0, X, Y, tangents)
    what = f"rnn τ={tau} N={n} D={d} H={h} K={k}"
    assert set(got) == {"loss", "grad", *EXACT}, set(got)
    for name, value in expected.items():
        assert_close(got[name], value, F64, f"{what}: {name}", atol=1e-14)
    assert isinstance(gv, mdc_jax.RNNParams) and isinstance(got["kflr"], mdc_jax.RNNParams)
    assert_close(gv, expected_gv, F64, f"{what}: ggn_vp", atol=1e-14)
    assert_close(jax.tree.map(lambda b: jnp.sum(b, axis=0), got["batch_diag_ggn"]), got["diag_ggn"], F64,
                 f"{what}: batch_diag_ggn summed over the batch", atol=1e-14)
    if tau == 1 and n == 1:  # one step, one sequence: G's blocks are exactly the Kronecker products
        blocks = ref.blocks(G, params)
        for name in ("W", "U", "V"):
            assert_close(jnp.kron(*getattr(got["kflr"], name)), getattr(blocks, name), F64, f"{what}: kron {name}",
                         atol=1e-14)


def test_rnn_kronecker_factors_at_one_step_are_the_fcnn_factors_of_the_same_network():
    """τ = 1 and Z0 = 0: the RNN is the FCNN X → tanh(XU + b) → ·V + c, and its factors are that FCNN's."""
    params, Z0, X, Y = rnn_case(4, 1, 5, 3, 4, 3, jnp.float64, one_hot=False)
    Z0, Y = jnp.zeros_like(Z0), scale_rows(Y, 4)
    mlp = [(params.U, params.b), (params.V, params.c)]

    def run(params, Z0, X, Y, mlp):
        return (curv.rnn_quantities(params, Z0, X, Y, quantities=("kflr", "diag_ggn")),
                curv.fcnn_quantities(mlp, X[0], Y[0], ["tanh"], quantities=("kflr", "diag_ggn")))

    rnn, fcnn = jax.jit(run)(params, Z0, X, Y, mlp)
    ((A_1, B_1), _), ((A_2, B_2), _) = fcnn["kflr"]
    expected = mdc_jax.RNNParams((jnp.zeros_like(params.W), B_1), (A_1, B_1), B_1, (A_2, B_2), B_2)
    assert_close(rnn["kflr"], expected, F64, "rnn kflr at τ = 1 vs the FCNN's", atol=1e-14)
    assert_close([(rnn["diag_ggn"].U, rnn["diag_ggn"].b), (rnn["diag_ggn"].V, rnn["diag_ggn"].c)], fcnn["diag_ggn"],
                 F64, "rnn diag_ggn at τ = 1 vs the FCNN's")


# ---------------------------------------------------------------------------------------------
# Monte-Carlo quantities: unbiased


KEYS, MC = 1000, 4  # 4000 sampled columns per example
MC_RTOL = 0.05  # ‖mean − exact‖ / ‖exact‖ (measured: ≈ 0.01); a scale of ×2 or ×½ is off by 1 or ½


def assert_unbiased(mean, exact, unweighted, what):
    """The mean over keys is within MC_RTOL of the exact quantity, and that bound is tight enough to refuse
    a wrong scale (×2, ×½) and the quantity without the row sums 1ᵀy (``unweighted``, when given)."""
    err = rel_norm(mean, exact)
    assert err <= MC_RTOL, f"{what}: ‖mean over {KEYS} keys − exact‖ / ‖exact‖ = {err:.3f} > {MC_RTOL}"
    wrong = [jax.tree.map(lambda x: 2 * x, exact), jax.tree.map(lambda x: x / 2, exact)]
    for bad in wrong + ([unweighted] if unweighted is not None else []):
        assert rel_norm(mean, bad) > 2 * MC_RTOL, f"{what}: the bound would not catch a wrong scale"


def output_factors(kfac):
    """The B factors (the A factors are exact; test_float32_* checks that they are kflr's)."""
    return [B for (_, B), _ in kfac] if isinstance(kfac, list) else [kfac.W[1], kfac.V[1]]


def mc_case(model):
    """Small cases with degenerate sizes: K = 2 and a width-1 layer, one output, a prime τ."""
    if model == "rnn":
        params, Z0, X, Y = rnn_case(7, 5, 2, 2, 3, 2, jnp.float64, one_hot=False)
        return lambda Y, **kw: curv.rnn_quantities(params, Z0, X, Y, **kw), scale_rows(Y, 7)
    dims, acts = ([3, 1, 4, 2], ["sigmoid", "tanh"]) if model == "classification" else ([2, 3, 1], ["softplus", "tanh"])
    params, X, Y, acts = fcnn_setup(8, 5, dims, model, acts)
    return lambda Y, **kw: curv.fcnn_quantities(params, X, Y, acts, task=model, **kw), Y


@pytest.mark.parametrize("model", ["classification", "regression", "rnn"])
def test_diag_ggn_mc_and_kfac_are_unbiased_over_many_keys(model):
    quantities, Y = mc_case(model)
    sampled = jax.jit(jax.vmap(lambda key: quantities(Y, quantities=("diag_ggn_mc", "kfac"), key=key, mc_samples=MC)))
    exact = jax.jit(lambda Y: quantities(Y, quantities=("diag_ggn", "kflr")))
    got, want = sampled(jax.random.split(jax.random.key(0), KEYS)), exact(Y)
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), got)
    # The same network with probability rows: the GGN without 1ᵀy (regression has no row sums).
    unweighted = exact(Y / jnp.sum(Y, axis=-1, keepdims=True)) if model != "regression" else None
    assert_unbiased(mean["diag_ggn_mc"], want["diag_ggn"], unweighted and unweighted["diag_ggn"], f"{model} diag_ggn_mc")
    assert_unbiased(output_factors(mean["kfac"]), output_factors(want["kflr"]),
                    unweighted and output_factors(unweighted["kflr"]), f"{model} kfac's B")
    first, second = jax.tree.map(lambda x: x[0], got), jax.tree.map(lambda x: x[1], got)
    assert rel_norm(first, second) > 1e-3, "each key draws other labels"
    assert all(np.all(np.asarray(d) >= 0) for d in jax.tree.leaves(first["diag_ggn_mc"])), "a sum of squares"
    assert all(np.all(np.linalg.eigvalsh(np.asarray(B)) > -1e-12) for B in output_factors(first["kfac"])), "Gram"


# ---------------------------------------------------------------------------------------------
# Dtypes, jit, structure


def test_float32_inputs_give_float32_results_under_jit_with_a_traced_key():
    """All quantities in one call, compiled, the key traced: float32 results close to float64's, and kfac's
    input factors A are kflr's, exactly (one forward)."""
    params, X, Y, acts = fcnn_setup(9, 6, [4, 5, 3], "classification", ["softplus"], jnp.float32)
    rparams, Z0, Xr, Yr = rnn_case(9, 4, 3, 2, 3, 3, jnp.float32, one_hot=False)

    def run(params, X, Y, rparams, Z0, Xr, Yr, key, names=(curv.QUANTITIES, curv.RNN_QUANTITIES)):
        return (curv.fcnn_quantities(params, X, Y, acts, quantities=names[0], key=key, mc_samples=2),
                curv.fcnn_ggn_vp(params, X, Y, acts, params),
                curv.rnn_quantities(rparams, Z0, Xr, Yr, quantities=names[1], key=key, mc_samples=2),
                curv.rnn_ggn_vp(rparams, Z0, Xr, Yr, rparams))

    args = (params, X, Y, rparams, Z0, Xr, Yr)
    f = jax.jit(run)
    got = f(*args, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got)), {x.dtype for x in jax.tree.leaves(got)}
    exact = (("diag_ggn", "batch_diag_ggn", "kflr", "diag_hessian"), EXACT)
    expected = jax.jit(lambda *a: run(*a, None, exact))(*jax.tree.map(lambda a: a.astype(jnp.float64), args))
    keep = lambda out: tuple({k: x for k, x in q.items() if k not in ("diag_ggn_mc", "kfac")} if isinstance(q, dict)
                             else q for q in out)
    assert_close(keep(got), expected, F32, "float32 vs float64", atol=1e-6)
    fcnn, _, rnn, _ = got
    for ((A_mc, _), _), ((A, _), _) in zip(fcnn["kfac"], fcnn["kflr"]):
        np.testing.assert_array_equal(A_mc, A, err_msg="fcnn: kfac's A is kflr's A")
    for name in ("W", "U", "V"):
        np.testing.assert_array_equal(getattr(rnn["kfac"], name)[0], getattr(rnn["kflr"], name)[0],
                                      err_msg=f"rnn: kfac's A_{name} is kflr's A_{name}")
    again = f(*args, jax.random.key(1))
    assert not np.allclose(again[0]["diag_ggn_mc"][0][0], fcnn["diag_ggn_mc"][0][0]), "the traced key is used"


def test_results_keep_the_structure_of_params():
    params, X, Y, acts = fcnn_setup(0, 3, [3, 2, 2], "classification", ["tanh"])
    as_lists = [list(layer) for layer in params]
    got = jax.eval_shape(lambda p: curv.fcnn_quantities(p, X, Y, acts, quantities=EXACT), as_lists)
    assert jax.tree.structure(got["diag_ggn"]) == jax.tree.structure(as_lists)
    assert [g.shape for g in jax.tree.leaves(got["batch_diag_ggn"])] == [(3, 3, 2), (3, 2), (3, 2, 2), (3, 2)]
    assert [(A.shape, B.shape, Bb.shape) for (A, B), Bb in got["kflr"]] == [((3, 3), (2, 2), (2, 2)), ((2, 2), (2, 2), (2, 2))]
    assert set(jax.eval_shape(lambda: curv.fcnn_quantities(params, X, Y, acts, quantities=()))) == {"loss", "grad"}
    gv = jax.eval_shape(lambda p: curv.fcnn_ggn_vp(p, X, Y, acts, p), as_lists)
    assert jax.tree.structure(gv) == jax.tree.structure(as_lists)


# ---------------------------------------------------------------------------------------------
# Bad input


def stacked(tree, k, dtype=None):
    """``k`` copies of ``tree`` stacked on a leading axis, as NumPy arrays (no eager XLA op to compile)."""
    return jax.tree.map(lambda x: np.stack([np.asarray(x, dtype)] * k), tree)


def _wrong_leaf(params):
    (W1, b1), (W2, b2) = params
    return [(W1, b1), (W2[:, :1], b2)]


@pytest.mark.parametrize("call, match", [
    (lambda a: curv.fcnn_quantities(*a, quantities=("diag_ggn", "hessian")),
     r"fcnn_quantities: quantities: unknown quantity 'hessian'"),
    (lambda a: curv.fcnn_quantities(*a, quantities="diag_ggn"), r"fcnn_quantities: quantities must be a sequence"),
    (lambda a: curv.fcnn_quantities(*a, quantities=("kfac",)), r"fcnn_quantities: key is required for 'kfac'"),
    (lambda a: curv.fcnn_quantities(*a, quantities=("diag_ggn", "diag_ggn_mc")), r"fcnn_quantities: key is required"),
    (lambda a: curv.fcnn_quantities(*a, key=jax.random.key(0), mc_samples=0),
     r"fcnn_quantities: mc_samples must be an int >= 1; got 0"),
    (lambda a: curv.fcnn_quantities(*a, key=jax.random.key(0), mc_samples=1.5),
     r"fcnn_quantities: mc_samples must be an int >= 1; got 1\.5"),
    (lambda a: curv.fcnn_quantities(*a, task="ranking"), r"task must be one of \('classification', 'regression'\)"),
    (lambda a: curv.fcnn_quantities(a[0], a[1], jnp.zeros(4, jnp.int32), a[3]), r"fcnn_quantities: Y .*one_hot"),
    (lambda a: curv.fcnn_ggn_vp(*a, a[0][:1]), r"fcnn_ggn_vp: tangents must have the structure of params"),
    (lambda a: curv.fcnn_ggn_vp(*a, _wrong_leaf(a[0])),
     r"fcnn_ggn_vp: tangents\[1\]\[0\] \(W_2\) has shape \(3, 1\); expected \(3, 2\)"),
    (lambda a: curv.fcnn_ggn_vp(*a, jax.tree.map(lambda x: x.astype(jnp.float32), a[0])),
     r"fcnn_ggn_vp: tangents\[0\]\[0\] \(W_1\) has dtype float32; expected float64"),
    (lambda a: curv.fcnn_ggn_gram(*a, a[0]), r"fcnn_ggn_gram: tangents\[0\]\[0\] \(W_1\) has shape \(3, 3\); "
                                            r"expected \(k, 3, 3\): k tangents stacked on a leading axis"),
    (lambda a: curv.fcnn_ggn_gram(*a, stacked(a[0][:1], 1)),
     r"fcnn_ggn_gram: tangents must have the structure of params"),
    (lambda a: curv.fcnn_ggn_gram(*a, [(stacked(W, 2), stacked(b, k)) for (W, b), k in zip(a[0], (2, 3))]),
     r"fcnn_ggn_gram: tangents\[1\]\[1\] \(b_2\) has shape \(3, 2\); expected \(2, 2\): k = 2 .*tangents\[0\]\[0\] \(W_1\)"),
    (lambda a: curv.fcnn_ggn_gram(*a, stacked(a[0], 1, np.float32)),
     r"fcnn_ggn_gram: tangents\[0\]\[0\] \(W_1\) has dtype float32; expected float64"),
])
def test_fcnn_bad_input_raises_naming_the_argument(call, match):
    params, X, Y, acts = fcnn_setup(0, 4, [3, 3, 2], "classification", ["tanh"])
    with pytest.raises(ValueError, match=match):
        call((params, X, Y, acts))


def test_diag_hessian_refuses_an_activation_without_a_second_derivative_but_the_ggn_takes_it():
    cube = mdc_jax.register_activation("test_curvature_cube", lambda a: a**3, lambda a: 3 * a**2, overwrite=True)
    assert cube.second_derivative is None
    params, X, Y, acts = fcnn_setup(0, 4, [3, 3, 2], "classification", [cube.name])
    with pytest.raises(ValueError, match=r"fcnn_quantities: .*activations\[0\].*'test_curvature_cube'"):
        curv.fcnn_quantities(params, X, Y, acts, quantities=("diag_ggn", "diag_hessian"))
    assert set(jax.eval_shape(lambda: curv.fcnn_quantities(params, X, Y, acts))) == {"loss", "grad", "diag_ggn"}


@pytest.mark.parametrize("call, match", [
    (lambda a: curv.rnn_quantities(*a, quantities=("diag_hessian",)),
     r"rnn_quantities: quantities: unknown quantity 'diag_hessian'"),
    (lambda a: curv.rnn_quantities(*a, quantities=("kfac", "diag_ggn")), r"rnn_quantities: key is required for 'kfac'"),
    (lambda a: curv.rnn_quantities(*a, key=jax.random.key(0), mc_samples=0), r"rnn_quantities: mc_samples must be an int"),
    (lambda a: curv.rnn_quantities(*a[:3], jnp.zeros((3, 2), jnp.int32)), r"rnn_quantities: Y .*one_hot"),
    (lambda a: curv.rnn_ggn_vp(*a, tuple(a[0])[:4]), r"rnn_ggn_vp: tangents must .*structure of params"),
    (lambda a: curv.rnn_ggn_vp(*a, a[0]._replace(V=a[0].V.T)), r"rnn_ggn_vp: tangents.*V.* has shape \(2, 3\)"),
    (lambda a: curv.rnn_ggn_gram(*a, a[0]), r"rnn_ggn_gram: tangents\.W has shape \(3, 3\); expected \(k, 3, 3\)"),
    (lambda a: curv.rnn_ggn_gram(*a, tuple(stacked(a[0], 1))[:4]), r"rnn_ggn_gram: tangents must be an RNNParams"),
    (lambda a: curv.rnn_ggn_gram(*a, stacked(a[0], 1)._replace(c=np.zeros((2, 2)))),
     r"rnn_ggn_gram: tangents\.c has shape \(2, 2\); expected \(1, 2\)"),
])
def test_rnn_bad_input_raises_naming_the_argument(call, match):
    params, Z0, X, Y = rnn_case(0, 3, 2, 2, 3, 2, jnp.float64)
    with pytest.raises(ValueError, match=match):
        call((params, Z0, X, Y))


def test_the_closed_forms_never_call_autodiff():
    for path in sorted(Path(inspect.getfile(rules)).parent.glob("*.py")):
        source = path.read_text()
        calls = re.findall(r"(?<![\w])(?:jax\.)?(?:grad|vjp|jvp|jacrev|jacfwd|linearize|hessian|value_and_grad)\(",
                           source)
        assert not calls, (path.name, calls)


# ---------------------------------------------------------------------------------------------
# Structural damping (Martens & Sutskever 2011): (G + wS)v, S the hidden states' Gauss–Newton matrix


@functools.cache
def rnn_products():
    """One RNN case (τ = 5: five chunks of one step) and, in one program, the rule's (G + wS)v at w = 0.7, its
    G v, and the Gram matrix of three stacked tangents (the last one v), each beside its reference from the
    explicit G and S (jax.jacfwd of the outputs and of the states)."""
    params, Z0, X, Y = rnn_case(11, 5, 3, 2, 3, 3, jnp.float64, one_hot=False)
    Y = scale_rows(Y, 11)
    tangents = random_like(params, 12)
    V = jax.tree.map(lambda *xs: jnp.stack(xs), random_like(params, 13), random_like(params, 14), tangents)

    def run(params, Z0, X, Y, tangents, V, w):
        G = jnp.sum(ref.rnn_batch_ggn(params, Z0, X, Y), axis=0)
        S = jnp.sum(ref.rnn_batch_structural(params, Z0, X), axis=0)
        return {"structural": (curv.rnn_ggn_vp(params, Z0, X, Y, tangents, structural=w),
                               ref.ggn_vp(G + w * S, params, tangents)),
                "plain": (curv.rnn_ggn_vp(params, Z0, X, Y, tangents), ref.ggn_vp(G, params, tangents)),
                "gram": (curv.rnn_ggn_gram(params, Z0, X, Y, V), ref.ggn_gram(G, V)), "S": S}

    return (params, Z0, X, Y, tangents, V), jax.jit(run)(params, Z0, X, Y, tangents, V, jnp.asarray(0.7))


def test_rnn_ggn_vp_with_structural_damping_matches_the_explicit_ggn_plus_w_times_the_states_ggn_float64():
    """One backward gives (G + wS)v with S = (1/N) Σ_{t,i} J_{Z,t,i}ᵀJ_{Z,t,i} (jax.jacfwd of the states), the
    weight traced (an optimizer's λ·μ); w = 0 is G v; a negative weight is refused, naming it."""
    (params, Z0, X, Y, tangents, _), out = rnn_products()
    (got, want), (plain, want_plain), S = out["structural"], out["plain"], out["S"]
    assert_close(got, want, F64, "rnn (G + wS)v", atol=1e-14)
    assert_close(plain, want_plain, F64, "rnn G v (structural=0)", atol=1e-14)
    assert rel_norm(got, plain) > 1e-2, "S v is not negligible here: the test can fail"
    assert np.all(np.asarray(ref.blocks(S, params).V) == 0), "the states do not depend on V"
    with pytest.raises(ValueError, match=r"rnn_ggn_vp: structural must be a finite number >= 0; got -1"):
        curv.rnn_ggn_vp(params, Z0, X, Y, tangents, structural=-1.0)


# ---------------------------------------------------------------------------------------------
# GGN Gram matrices [v_aᵀ G v_b]: the forward differentials alone, k tangents stacked on a leading axis


def stacked_like(tree, k, seed):
    """``k`` random tangents like ``tree``, stacked leaf by leaf on a leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *(random_like(tree, seed + a) for a in range(k)))


def tree_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_fcnn_ggn_gram_equals_the_explicit_quadratic_form_and_the_ggn_vp_products_float64():
    """[v_aᵀ G v_b] against Vᵀ(G V) from the explicit GGN: classification (soft rows, a curved hidden layer)
    with k = 3, its last column also against [v_a · ggn_vp(v_k)]; regression (a curved last activation) with
    k = 1. One program."""
    cls, reg = (fcnn_setup(3, 4, [3, 4, 3], "classification", ["tanh"]),
                fcnn_setup(4, 3, [2, 3, 2], "regression", ["softplus", "sigmoid"]))
    V_cls, V_reg = stacked_like(cls[0], 3, 30), stacked_like(reg[0], 1, 10)

    def run(cls, reg, V_cls, V_reg):
        out = []
        for task, (params, X, Y), acts, V in (("classification", cls, cls_acts, V_cls), ("regression", reg, reg_acts, V_reg)):
            G = jnp.sum(ref.fcnn_batch_ggn(params, X, Y, acts, task=task), axis=0)
            out.append((curv.fcnn_ggn_gram(params, X, Y, acts, V, task=task), ref.ggn_gram(G, V)))
        params, X, Y = cls
        Gv = curv.fcnn_ggn_vp(params, X, Y, cls_acts, jax.tree.map(lambda x: x[-1], V_cls))
        return out, jnp.stack([tree_dot(jax.tree.map(lambda x: x[a], V_cls), Gv) for a in range(3)])

    cls_acts, reg_acts = cls[3], reg[3]
    out, products = jax.jit(run)(cls[:3], reg[:3], V_cls, V_reg)
    for (got, want), task, k in zip(out, ("classification", "regression"), (3, 1)):
        assert got.shape == (k, k), (task, got.shape)
        assert_close(got, want, F64, f"{task} k={k}: Gram vs Vᵀ(GV)", atol=1e-14)
    assert_close(out[0][0][:, -1], products, F64, "classification: Gram vs [v_a · ggn_vp(v_3)]", atol=1e-14)


def test_rnn_ggn_gram_equals_the_explicit_quadratic_form_and_the_ggn_vp_products_float64():
    """The same for the RNN, k = 3 over five chunks of time (the program of the structural-damping test)."""
    (*_, V), out = rnn_products()
    (got, want), (Gv, _) = out["gram"], out["plain"]
    assert got.shape == (3, 3)
    assert_close(got, want, F64, "rnn: Gram vs Vᵀ(GV)", atol=1e-14)
    leaves = [(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(V), jax.tree.leaves(Gv))]
    products = [sum(np.vdot(x[a], y) for x, y in leaves) for a in range(3)]  # v_3 is the tangents of G v
    assert_close(got[:, -1], np.asarray(products), F64, "rnn: Gram vs [v_a · ggn_vp(v_k)]", atol=1e-14)
