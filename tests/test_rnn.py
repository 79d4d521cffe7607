"""Specification of the RNN rule (seed 000, §6.4) against jax.grad of the plain lax.scan reference."""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from mdc_jax.reference import rnn as ref
from mdc_jax.rules import rnn as rnn_module
from mdc_jax.rules import rnn_segments
from mdc_jax.rules.rnn import RNNParams, rnn_forward, rnn_loss, rnn_loss_and_state, rnn_truncated_bptt_grads
from mdc_jax.testing import assert_grads_match, assert_tree_shapes_and_dtypes

from .helpers import F32_RTOL, F64_RTOL, assert_close, assert_runs_through_custom_rule

ARGNUMS = (0, 1, 2, 3)  # params, Z0, X, Y: every argument has a cotangent


def rnn_case(seed, tau, n, d, h, k, dtype, one_hot=True, weight_scale=1.0):
    return ref.rnn_case(seed, tau, n, d, h, k, dtype, one_hot=one_hot, weight_scale=weight_scale)


def assert_matches_autodiff(case, rtol, rule=rnn_loss, reference=ref.rnn_loss):
    """Loss and every argument's gradient (an RNNParams for ``params``, like the reference's) against
    autodiff of the reference, in the arguments' shapes and dtypes."""
    assert_grads_match(rule, reference, case, argnums=ARGNUMS, rtol=rtol)


def assert_finite_value_and_grads(case):
    value, grads = jax.jit(jax.value_and_grad(rnn_loss, argnums=ARGNUMS))(*case)
    assert isinstance(grads[0], RNNParams)
    chex.assert_tree_all_finite((value, grads))
    return value


@st.composite
def rnn_setups(draw):
    """seed, τ, N, D, H, K, one-hot: τ up to 13 covers chunks of 1–4 steps and several chunks."""
    return (draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 13)), draw(st.integers(1, 5)),
            draw(st.integers(1, 6)), draw(st.integers(1, 7)), draw(st.integers(2, 6)), draw(st.booleans()))


# ---------------------------------------------------------------------------------------------
# Agreement with autodiff


# Each example compiles the rule and the reference (about a second); the test suite's budget is a
# minute, so these take a share of the profile's examples ("thorough" raises them alike).


@settings(max_examples=5)
@given(rnn_setups())
@example((0, 1, 1, 1, 1, 2, True))  # τ = 1, N = 1, D = 1, H = 1, K = 2
@example((1, 12, 3, 4, 5, 3, False))  # three chunks of four steps
def test_loss_and_all_gradients_match_autodiff_float64(setup):
    seed, tau, n, d, h, k, one_hot = setup
    assert_matches_autodiff(rnn_case(seed, tau, n, d, h, k, jnp.float64, one_hot), F64_RTOL)


@settings(max_examples=3)
@given(rnn_setups())
@example((0, 1, 1, 1, 1, 2, True))
def test_loss_and_all_gradients_match_autodiff_float32(setup):
    seed, tau, n, d, h, k, one_hot = setup
    assert_matches_autodiff(rnn_case(seed, tau, n, d, h, k, jnp.float32, one_hot), F32_RTOL)


def test_unnormalised_label_rows_match_autodiff():
    """Rows of Y_t that do not sum to one keep the exact gradient (the factor Y_t1 is kept)."""
    params, Z0, X, _ = rnn_case(3, 6, 4, 3, 5, 3, jnp.float64)
    Y = jnp.asarray(np.random.default_rng(9).uniform(1.0, 2.0, (6, 4, 3)))
    assert_matches_autodiff((params, Z0, X, Y), F64_RTOL)


def test_final_state_cotangent_is_exact():
    """Differentiating through Z_τ (not as aux) gives the autodiff gradient of J + f(Z_τ)."""
    case = rnn_case(4, 7, 3, 2, 4, 3, jnp.float64)
    with_state = lambda loss: lambda *a: (lambda J, Z: J + jnp.sum(jnp.sin(Z)))(*loss(*a))
    assert_matches_autodiff(case, F64_RTOL, with_state(rnn_loss_and_state), with_state(ref.rnn_loss_and_state))


def test_forward_matches_reference_and_its_logits_give_the_loss():
    params, Z0, X, Y = rnn_case(5, 6, 3, 2, 4, 3, jnp.float64)
    Z, O = rnn_forward(params, Z0, X)
    Z_ref, O_ref = ref.rnn_forward(params, Z0, X)
    assert O.shape == (6, 3, 3)
    assert_close((Z, O), (Z_ref, O_ref), F64_RTOL, "forward")
    J, Z_tau = rnn_loss_and_state(params, Z0, X, Y)
    assert_close((J, Z_tau), (-jnp.sum(Y * jax.nn.log_softmax(O, axis=-1)) / 3, Z), F64_RTOL, "loss from logits")


def test_wide_case_matches_autodiff_float64():
    assert_matches_autodiff(rnn_case(7, 17, 16, 24, 40, 11, jnp.float64, one_hot=False), F64_RTOL)


# ---------------------------------------------------------------------------------------------
# Token ids, integer labels and the fused output head (linear_softmax_cross_entropy's §6.3.1, blocked)


def _tokens(seed, tau, n, d, k):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.integers(0, d, (tau, n)), jnp.int32), jnp.asarray(rng.integers(0, k, (tau, n)), jnp.int32))


@settings(max_examples=3)
@given(rnn_setups(), st.integers(1, 9), st.integers(1, 7))
@example((0, 1, 1, 1, 1, 2, True), 1, 1)  # τ = 1, N = 1, K = 2: a block of one row and one class
@example((1, 12, 3, 4, 5, 3, False), 5, 2)  # three chunks; blocks dividing neither τN = 36 nor K = 3
@example((2, 5, 2, 3, 4, 2, True), 64, 64)  # blocks larger than τN and K
def test_fused_head_matches_autodiff_float64(setup, token_block, vocab_block):
    seed, tau, n, d, h, k, one_hot = setup
    fused = lambda *a: rnn_loss(*a, head="fused", block_size=(token_block, vocab_block))
    assert_matches_autodiff(rnn_case(seed, tau, n, d, h, k, jnp.float64, one_hot), F64_RTOL, rule=fused)


def test_fused_head_float32_under_jit_and_final_state_cotangent():
    case = rnn_case(3, 9, 4, 3, 6, 13, jnp.float32, one_hot=False)
    assert_matches_autodiff(case, F32_RTOL, rule=lambda *a: rnn_loss(*a, head="fused", block_size=(7, 5)))
    case = rnn_case(4, 7, 3, 2, 4, 5, jnp.float64)
    with_state = lambda loss: lambda *a: (lambda J, Z: J + jnp.sum(jnp.sin(Z)))(*loss(*a))
    fused = functools.partial(rnn_loss_and_state, head="fused", block_size=4)
    assert_matches_autodiff(case, F64_RTOL, with_state(fused), with_state(ref.rnn_loss_and_state))


@pytest.mark.parametrize("head", ["plain", "fused"])
def test_token_ids_and_integer_labels_equal_their_one_hot_rows(head):
    """Integer X (τ, N) are rows of U and integer Y (τ, N) classes: the same loss and parameter gradients
    as the one-hot arrays they stand for, under jit; ids and labels get no cotangent."""
    params, Z0, _, _ = rnn_case(5, 6, 4, 7, 5, 9, jnp.float64)
    ids, labels = _tokens(5, 6, 4, 7, 9)
    ids = ids.at[0, 0].set(3).at[1, 0].set(3)  # a row of U used twice: its gradient rows add up
    loss = lambda *a: rnn_loss(*a, head=head)
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, Z0, ids, labels)
    dense = (params, Z0, jax.nn.one_hot(ids, 7, dtype=jnp.float64), jax.nn.one_hot(labels, 9, dtype=jnp.float64))
    ref_value, ref_grads = jax.jit(jax.value_and_grad(ref.rnn_loss, argnums=(0, 1)))(*dense)
    assert_close((value, grads), (ref_value, ref_grads), F64_RTOL, "token ids")
    g_ids, g_labels = jax.grad(loss, argnums=(2, 3), allow_int=True)(params, Z0, ids, labels)
    assert g_ids.dtype == jax.dtypes.float0 and g_labels.dtype == jax.dtypes.float0
    Z, O = rnn_forward(params, Z0, ids)
    assert_close((Z, O), rnn_forward(params, Z0, dense[2]), F64_RTOL, "forward of token ids")


def test_fused_truncated_bptt_equals_the_plain_head_also_for_token_ids():
    case = rnn_case(6, 7, 3, 2, 4, 6, jnp.float64, one_hot=False)
    plain = rnn_truncated_bptt_grads(*case, 3)
    assert_close(rnn_truncated_bptt_grads(*case, 3, head="fused", block_size=(4, 4)), plain, F64_RTOL, "fused TBPTT")
    params, Z0, _, _ = rnn_case(7, 7, 3, 5, 4, 6, jnp.float64)
    ids, labels = _tokens(7, 7, 3, 5, 6)
    dense = (jax.nn.one_hot(ids, 5, dtype=jnp.float64), jax.nn.one_hot(labels, 6, dtype=jnp.float64))
    expected = rnn_truncated_bptt_grads(params, Z0, *dense, 3)
    for head in ("plain", "fused"):
        assert_close(rnn_truncated_bptt_grads(params, Z0, ids, labels, 3, head=head), expected, F64_RTOL, f"ids ({head})")


def test_out_of_range_ids_and_labels_under_jit_are_zero_rows_like_their_one_hot():
    """Values are checked only when concrete; under jit an id or label outside its range stands for the
    zero row that jax.nn.one_hot gives it, in both heads (loss and gradient)."""
    params, Z0, _, _ = rnn_case(8, 5, 3, 4, 5, 6, jnp.float64)
    ids, labels = _tokens(8, 5, 3, 4, 6)
    ids, labels = ids.at[1, 2].set(4).at[2, 0].set(-1), labels.at[0, 0].set(-1).at[3, 1].set(6)
    dense = (jax.nn.one_hot(ids, 4, dtype=jnp.float64), jax.nn.one_hot(labels, 6, dtype=jnp.float64))
    expected = jax.value_and_grad(ref.rnn_loss)(params, Z0, *dense)
    for head in ("plain", "fused"):
        got = jax.jit(jax.value_and_grad(functools.partial(rnn_loss, head=head)))(params, Z0, ids, labels)
        assert_close(got, expected, F64_RTOL, f"out-of-range under jit ({head})")


def test_int64_labels_out_of_range_under_jit_agree_in_both_heads():
    """An int64 label of 2**32 + 1 under jit is the zero row in the fused head as in the plain one (and in
    jax.nn.one_hot), not class 1 after a cast to int32."""
    params, Z0, X, _ = rnn_case(9, 4, 3, 2, 5, 3, jnp.float64)
    labels = jnp.asarray(np.random.default_rng(9).integers(0, 3, (4, 3)), jnp.int64).at[1, 2].set(2**32 + 1)
    expected = jax.value_and_grad(ref.rnn_loss)(params, Z0, X, jax.nn.one_hot(labels, 3, dtype=jnp.float64))
    for head in ("plain", "fused"):
        got = jax.jit(jax.value_and_grad(functools.partial(rnn_loss, head=head)))(params, Z0, X, labels)
        assert_close(got, expected, F64_RTOL, f"int64 labels under jit ({head})")


def test_fused_head_never_holds_the_logits():
    """XLA's compiled temp memory: the plain head holds each chunk's k·N × K logits (and more), the
    fused one only a block of them."""
    tau, n, h, k = 8, 64, 8, 8192
    params, Z0, _, _ = rnn_case(0, 1, n, 1, h, k, jnp.float32)
    params = params._replace(U=jnp.ones((50, h), jnp.float32) / 50)
    ids, labels = _tokens(0, tau, n, 50, k)
    temp = lambda **kw: (jax.jit(jax.grad(functools.partial(rnn_loss, **kw))).lower(params, Z0, ids, labels)
                         .compile().memory_analysis().temp_size_in_bytes)
    chunk_logits = 4 * n * k * 4  # bytes of one chunk's logits (k = 4 steps)
    plain, fused = temp(), temp(head="fused", block_size=(64, 512))
    assert plain >= chunk_logits
    assert fused < chunk_logits / 8, (plain, fused)


# ---------------------------------------------------------------------------------------------
# Checkpointed BPTT (checkpoint_every), ignored tokens, the fused head's options


def _with_state(loss):
    """``J + Σ sin(Z_τ)``: the final state gets a cotangent too."""
    return lambda *a: (lambda J, Z: J + jnp.sum(jnp.sin(Z)))(*loss(*a))


@pytest.mark.parametrize(("head", "ks"), [
    ("plain", (3, 8)),  # τ = 8: segments of 3 + 3 + 2 steps; one segment of τ
    ("fused", (1, 4)),  # k = 1; k dividing τ
])
def test_checkpointed_bptt_gives_the_full_rules_gradients_and_autodiffs(head, ks):
    """checkpoint_every = k keeps every k-th state and recomputes each segment in the backward: the loss, the
    final state and every cotangent (Z_τ's, X's and the soft Y's included) equal the rule's with every state
    kept, to 1e-12, and autodiff's. (Token ids and integer labels: the next test.)"""
    case = rnn_case(11, 8, 3, 5, 4, 6, jnp.float64, one_hot=False)
    block = (5, 4) if head == "fused" else None  # blocks dividing neither a segment's k·N rows nor K = 6
    loss = lambda k: _with_state(functools.partial(rnn_loss_and_state, head=head, block_size=block, checkpoint_every=k))
    full, *checkpointed = jax.jit(lambda *a: [jax.value_and_grad(loss(k), ARGNUMS)(*a) for k in (None, *ks)])(*case)
    for k, got in zip(ks, checkpointed):
        assert_close(got, full, 1e-12, f"checkpoint_every={k} against every state kept")
    expected = jax.jit(jax.value_and_grad(_with_state(ref.rnn_loss_and_state), ARGNUMS))(*case)
    assert_close(checkpointed[0], expected, F64_RTOL, "autodiff")


@pytest.mark.parametrize("head", ["plain", "fused"])
def test_ignored_labels_contribute_nothing_and_the_loss_stays_a_mean_over_sequences(head):
    """ignore_index: the label's tokens are the zero row (no loss, no gradient) and J = (1/N) Σ_i ℓ_i keeps N,
    not a token count. Token ids, checkpointed (segments of 4 + 2 steps), and the fused head's options,
    against autodiff."""
    params, Z0, _, _ = rnn_case(13, 6, 3, 5, 4, 7, jnp.float64)
    ids, labels = _tokens(13, 6, 3, 5, 7)
    labels = labels.at[2].set(2)  # a whole step ignored, and the 2s elsewhere
    kw = dict(ignore_index=2, checkpoint_every=4)
    if head == "plain":
        got = jax.jit(jax.value_and_grad(functools.partial(rnn_loss, **kw)))(params, Z0, ids, labels)
        dense = jax.nn.one_hot(jnp.where(labels == 2, -1, labels), 7, dtype=jnp.float64)  # ignored: zero rows
        expected = jax.value_and_grad(ref.rnn_loss)(params, Z0, ids, dense)
    else:
        kw.update(head_options={"z_loss": 0.01, "label_smoothing": 0.1, "softcap": 2.0})
        got = jax.jit(jax.value_and_grad(functools.partial(rnn_loss, head="fused", block_size=(5, 3), **kw)))(
            params, Z0, ids, labels)
        expected = jax.value_and_grad(functools.partial(ref.rnn_loss, **kw))(params, Z0, ids, labels)
    assert_close(got, expected, F64_RTOL, f"ignore_index ({head})")
    # Concrete labels: ignore_index passes the range check and becomes -1, the zero row.
    Y = rnn_module.check_inputs("rnn_loss", params, Z0, ids, labels.at[0, 0].set(-100), tokens=True, ignore_index=-100)[3]
    assert Y.dtype == jnp.int32 and int(Y[0, 0]) == -1 and jnp.array_equal(Y[1:], labels[1:])


def test_segment_walker_gives_the_backwards_per_step_rows_and_taps():
    """rnn_segments.backward over recomputed segments hands the per-example code what rnn.backward does: every
    ∇_{A_t}J (per_step), the head's outputs and accumulator, ∇_{Z_0}; tap sees every chunk's ∇_{A_t} stack."""
    params, Z0, X, Y = rnn_case(14, 7, 3, 2, 4, 5, jnp.float64)
    V, c = params.V, params.c

    def head(Z_out, Y_k, ell):  # ∇_{O_t}ℓ_i without 1/N, and ℓ_i accumulated: the per-example head
        logS = rnn_module.output_log_probs(Z_out, V, c)
        H = jnp.exp(logS) - Y_k
        return H @ V.T, ell - jnp.sum(Y_k * logS, axis=(0, 2)), H

    def tap_head(Z_out, Y_k, acc):  # the same, beside a tap's sum
        HV, ell, H = head(Z_out, Y_k, acc[1])
        return HV, (acc[0], ell), H

    def both(params, Z0, X, Y):
        _, Z_tau, Zs = rnn_module.forward(params, Z0, X, None)
        k = Zs.shape[1]
        ell0, gZ = jnp.zeros(3), jnp.zeros_like(Z_tau)
        full = rnn_module.backward(params, Zs, Z_tau, X, gZ, head, rnn_module.chunks(Y, k), ell0, per_step=True)
        Z_last, checkpoints = rnn_segments.checkpoints(params, Z0, X, 3)  # segments of 3 + 3 + 1 steps
        walked = rnn_segments.backward(params, checkpoints, X, gZ, head, Y, ell0, 3, per_step=True)
        tap = lambda acc, G, Z_in, X_k: (acc[0] + jnp.einsum("tnh,tng->hg", Z_in, G), acc[1])  # ∇_W by a tap
        tapped = rnn_segments.backward(params, checkpoints, X, gZ, tap_head, Y, (jnp.zeros_like(params.W), ell0), 3, tap=tap)
        dW = jnp.einsum("tnh,tng->hg", rnn_module.unchunk(Zs), rnn_module.unchunk(full.steps))
        return full, walked, tapped, dW, (Z_last, checkpoints), (Z_tau, rnn_module.unchunk(Zs)[::3])

    full, walked, tapped, dW, kept, states = jax.jit(both)(params, Z0, X, Y)
    assert_close(kept, states, 1e-12, "Z_τ and the checkpoints Z_0, Z_3, Z_6")
    assert walked.grads is None and walked.dX is None and walked.steps.shape == (7, 3, 4)
    flat = rnn_module.unchunk
    assert_close((walked.steps, walked.head_out, walked.head_acc, walked.dZ0),
                 (flat(full.steps), flat(full.head_out), full.head_acc, full.dZ0), 1e-12, "per_step over segments")
    assert_close(tapped.head_acc, (dW, full.head_acc), 1e-12, "tap over segments")


def test_checkpointed_program_holds_a_fraction_of_the_states():
    """XLA's compiled temp memory at τ = 256, N = 8, H = 64: every state kept holds the τ·N·H states; every
    16th holds the 16 checkpoints and one segment's states, a fraction (no timing)."""
    tau, n, h = 256, 8, 64
    params, Z0, _, _ = rnn_case(0, 1, n, 16, h, 16, jnp.float32)
    ids, labels = _tokens(0, tau, n, 16, 16)
    temp = lambda **kw: (jax.jit(jax.grad(functools.partial(rnn_loss, **kw))).lower(params, Z0, ids, labels)
                         .compile().memory_analysis().temp_size_in_bytes)
    states = tau * n * h * 4
    full, checkpointed = temp(), temp(checkpoint_every=16)
    assert full >= states and checkpointed < states / 2, (full, checkpointed, states)


# ---------------------------------------------------------------------------------------------
# Finite differences, transformations, long sequences


def test_gradients_match_finite_differences_float64():
    case = rnn_case(2, 5, 2, 3, 3, 3, jnp.float64, one_hot=False)
    check_grads(jax.jit(rnn_loss), case, order=2, modes=["rev"], eps=1e-4)


def test_rule_under_jit_matches_eager():
    case = rnn_case(4, 6, 3, 2, 4, 3, jnp.float64)
    jitted = jax.jit(jax.value_and_grad(rnn_loss, argnums=ARGNUMS))(*case)
    eager = jax.value_and_grad(rnn_loss, argnums=ARGNUMS)(*case)
    assert_close(jitted, eager, F64_RTOL, "jit vs eager")


def test_per_sequence_gradients_under_vmap():
    n = 4
    params, Z0, X, Y = rnn_case(6, 5, n, 3, 4, 3, jnp.float64)
    grad = lambda loss: jax.grad(loss, argnums=(0, 1, 2))
    # Each sequence as a batch of one: Z0 (1, H), X (τ, 1, D), Y (τ, 1, K).
    per_sequence = jax.jit(jax.vmap(grad(rnn_loss), in_axes=(None, 0, 1, 1)))(
        params, Z0[:, None, :], X[:, :, None, :], Y[:, :, None, :])
    one = jax.jit(grad(ref.rnn_loss))
    looped = [one(params, Z0[i:i + 1], X[:, i:i + 1], Y[:, i:i + 1]) for i in range(n)]
    assert_close(per_sequence, jax.tree.map(lambda *g: jnp.stack(g), *looped), F64_RTOL, "vmap")


def test_hessian_vector_products_by_grad_of_grad():
    params, Z0, X, Y = rnn_case(8, 6, 3, 2, 4, 3, jnp.float64)
    direction = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params)

    def hvp(loss):
        def directional(p):
            g = jax.grad(loss)(p, Z0, X, Y)
            return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
        return jax.grad(directional)(params)

    rule_hvp, ref_hvp = jax.jit(lambda: (hvp(rnn_loss), hvp(ref.rnn_loss)))()
    assert_close(rule_hvp, ref_hvp, 1e-9, "Hessian-vector product")


def _equations(jaxpr) -> int:
    """Equations of a jaxpr, those of nested jaxprs (scan bodies, the custom rule's) included."""
    count = len(jaxpr.eqns)
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += _equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += _equations(sub)
    return count


def test_thousand_steps_use_a_scan_and_give_finite_gradients():
    """τ = 1000: the traced program is the size of τ = 8's (a scan, not an unrolled loop), the
    gradients are finite with saturated states, and they still match autodiff."""
    grad = jax.value_and_grad(rnn_loss, argnums=ARGNUMS)
    sizes = [_equations(jax.make_jaxpr(grad)(*rnn_case(0, tau, 2, 3, 4, 3, jnp.float64)).jaxpr) for tau in (8, 1000)]
    assert sizes[0] == sizes[1], f"jaxpr grows with τ: {sizes}"

    case = rnn_case(1, 1000, 2, 3, 4, 3, jnp.float64, weight_scale=4.0)  # |A_t| large: tanh saturates
    assert_matches_autodiff(case, F64_RTOL)
    assert_finite_value_and_grads(case)


def test_logits_of_1e4_give_finite_correct_gradients():
    params, Z0, X, Y = rnn_case(2, 4, 3, 2, 3, 3, jnp.float64)
    params = params._replace(V=params.V * 1e4)
    for dtype, rtol in [(jnp.float64, F64_RTOL), (jnp.float32, F32_RTOL)]:
        case = jax.tree.map(lambda a: a.astype(dtype), (params, Z0, X, Y))
        assert_matches_autodiff(case, rtol)
        assert float(assert_finite_value_and_grads(case)) > 1e2


# ---------------------------------------------------------------------------------------------
# Truncated backpropagation through time


def _reference_chunk_grads(params, Z0, X, Y, chunk):
    """Σ_k ∇_params J_k with the carried state stop-gradiented, differentiated by autodiff."""
    def total(p):
        J, Z = 0.0, Z0
        for s in range(0, X.shape[0], chunk):
            J_k, Z = ref.rnn_loss_and_state(p, jax.lax.stop_gradient(Z), X[s:s + chunk], Y[s:s + chunk])
            J = J + J_k
        return J, Z
    (J, Z), g = jax.value_and_grad(total, has_aux=True)(params)
    return J, g, Z


def test_truncated_bptt_equals_gradients_of_the_chunk_losses():
    chunk = 4  # 10 steps: chunks of 4, 4 and a short last one of 2
    params, Z0, X, Y = rnn_case(3, 10, 3, 2, 4, 3, jnp.float64)
    expected = jax.jit(_reference_chunk_grads, static_argnums=4)(params, Z0, X, Y, chunk)

    # The documented pattern: value_and_grad with has_aux, the final state fed to the next chunk.
    step = jax.jit(jax.value_and_grad(rnn_loss_and_state, has_aux=True))
    J, grads, Z = 0.0, jax.tree.map(jnp.zeros_like, params), Z0
    for s in range(0, 10, chunk):
        (J_k, Z), g = step(params, Z, X[s:s + chunk], Y[s:s + chunk])
        J, grads = J + J_k, jax.tree.map(jnp.add, grads, g)
    assert_close((J, grads, Z), expected, F64_RTOL, "has_aux pattern")

    # The convenience: the same in one scan over chunks; checkpointed within each chunk too (segments of
    # 3 + 1 steps in the chunks of 4, one of 2 in the last chunk).
    got = jax.jit(rnn_truncated_bptt_grads, static_argnums=4)(params, Z0, X, Y, chunk)
    assert_close(got, expected, F64_RTOL, "rnn_truncated_bptt_grads")
    got = jax.jit(functools.partial(rnn_truncated_bptt_grads, checkpoint_every=3), static_argnums=4)(params, Z0, X, Y, chunk)
    assert_close(got, expected, F64_RTOL, "rnn_truncated_bptt_grads(checkpoint_every=3)")


def test_chained_chunks_without_aux_are_full_bptt():
    """The final state's cotangent flows back: two chained calls give the full-sequence gradient."""
    params, Z0, X, Y = rnn_case(5, 9, 2, 3, 4, 3, jnp.float64)

    def two_chunks(p, Z0, X, Y):
        J1, Z = rnn_loss_and_state(p, Z0, X[:5], Y[:5])
        J2, _ = rnn_loss_and_state(p, Z, X[5:], Y[5:])
        return J1 + J2

    assert_matches_autodiff((params, Z0, X, Y), F64_RTOL, rule=two_chunks)


# ---------------------------------------------------------------------------------------------
# The custom rule is what runs; dtypes


def test_gradient_runs_through_the_custom_rule(monkeypatch):
    """The loss is a custom_vjp call, and jax.grad invokes its closed-form backward."""
    case = rnn_case(0, 3, 2, 2, 3, 2, jnp.float64)
    assert_runs_through_custom_rule(rnn_module._rnn, rnn_loss, case, monkeypatch)
    assert_runs_through_custom_rule(rnn_module._rnn, functools.partial(rnn_loss, checkpoint_every=2), case, monkeypatch)


def test_bfloat16_keeps_its_dtype_and_matches_float32():
    """float32 and float64 dtypes are checked with every example above; bfloat16 against float32
    autodiff on the same (bfloat16-rounded) inputs, to bfloat16's precision."""
    case = rnn_case(1, 5, 3, 2, 4, 3, jnp.bfloat16)
    value, grads = jax.jit(jax.value_and_grad(rnn_loss, argnums=ARGNUMS))(*case)
    assert_tree_shapes_and_dtypes(grads, tuple(case), what="bfloat16 gradients")
    case32 = jax.tree.map(lambda a: a.astype(jnp.float32), case)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(ref.rnn_loss, argnums=ARGNUMS))(*case32)
    assert_close(value.astype(jnp.float32), ref_value, 2e-2, "bfloat16 loss")
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
    assert_close(jax.tree.map(lambda g: g.astype(jnp.float32), grads), ref_grads, 5e-2, "bfloat16 gradients",
                 atol=2e-2 * scale)


def test_plain_tuple_params_are_accepted():
    params, Z0, X, Y = rnn_case(2, 4, 2, 3, 4, 3, jnp.float64)
    g_tuple = jax.grad(rnn_loss)(tuple(params), Z0, X, Y)
    assert type(g_tuple) is tuple
    assert_close(RNNParams(*g_tuple), jax.grad(rnn_loss)(params, Z0, X, Y), F64_RTOL, "tuple params")


# ---------------------------------------------------------------------------------------------
# Bad input


def test_truncated_bptt_accepts_numpy_integers_for_chunk():
    case = rnn_case(3, 5, 2, 2, 3, 3, jnp.float64)
    J, grads, Z = rnn_truncated_bptt_grads(*case, chunk=2)
    J64, grads64, Z64 = rnn_truncated_bptt_grads(*case, chunk=np.int64(2))
    assert_close((J64, grads64, Z64), (J, grads, Z), 0.0, "chunk=np.int64(2)")
    for chunk in (np.array(2), jnp.asarray(2)):  # a concrete integer 0-d array is an int (traced only: fast)
        shapes = jax.eval_shape(lambda: rnn_truncated_bptt_grads(*case, chunk=chunk))
        assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, (J, grads, Z))
    for chunk in (np.float64(2.0), True, np.array(2.0), np.array([2])):
        with pytest.raises(ValueError, match=r"rnn_truncated_bptt_grads: chunk must be a positive int"):
            rnn_truncated_bptt_grads(*case, chunk=chunk)
    with pytest.raises(ValueError, match=r"rnn_truncated_bptt_grads: chunk is a traced value .*it must be static.*"
                                         r"static_argnames='chunk'"):
        jax.jit(rnn_truncated_bptt_grads)(*case, 2)


def _bad(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)
    with pytest.raises(ValueError, match=match):  # at trace time, under jit too
        jax.jit(fn)(*args)


def test_bad_input_raises_naming_argument_and_shapes():
    params, Z0, X, Y = rnn_case(0, 3, 4, 2, 5, 3, jnp.float64)  # τ = 3, N = 4, D = 2, H = 5, K = 3
    W, _U, b, V, c = params
    _bad(rnn_loss, (params, Z0, X[0], Y), r"X must be 3-D with shape \(τ, N, D\), time-major; got shape \(4, 2\)")
    _bad(rnn_loss, (params, Z0, X[..., :1], Y), r"U has shape \(2, 5\); expected \(1, 5\).*X's feature size D = 1")
    _bad(rnn_loss, (params, Z0, X, Y[:2]), r"Y has shape \(2, 4, 3\); expected \(3, 4, 3\).*X's 3 steps and 4 sequences")
    _bad(rnn_loss, (params, Z0, X, Y[:, :3]), r"Y has shape \(3, 3, 3\); expected \(3, 4, 3\)")
    _bad(rnn_loss, (params, Z0, X, Y[..., :2]), r"Y has shape \(3, 4, 2\); expected \(3, 4, 3\).*V's 3 columns")
    _bad(rnn_loss, (params, Z0[:3], X, Y), r"Z0 has shape \(3, 5\); expected \(4, 5\).*X's 4 sequences")
    _bad(rnn_loss, (params, Z0.T, X, Y), r"Z0 has shape \(5, 4\); expected \(4, 5\)")
    _bad(rnn_loss, (params._replace(W=W[:, :4]), Z0, X, Y),
         r"W must be square with shape \(H, H\) \(hidden-to-hidden weights\); got shape \(5, 4\)")
    _bad(rnn_loss, (params._replace(W=W[0]), Z0, X, Y), r"W must be 2-D with shape \(H, H\); got shape \(5,\)")
    _bad(rnn_loss, (params._replace(b=b[:3]), Z0, X, Y), r"b has shape \(3,\); expected \(5,\)")
    _bad(rnn_loss, (params._replace(c=c[:, None]), Z0, X, Y), r"c has shape \(3, 1\); expected \(3,\)")
    _bad(rnn_loss, (params._replace(V=V[:4]), Z0, X, Y), r"V has shape \(4, 3\); expected \(5, 3\).*hidden size H = 5")
    _bad(rnn_loss, (params[:4], Z0, X, Y), r"params must be an RNNParams\(W, U, b, V, c\).*length 4")
    _bad(rnn_loss, (params, Z0, X[:0], Y[:0]), r"X has shape \(0, 4, 2\); expected at least one time step")
    _bad(rnn_forward, (params, Z0, X[..., :1]), r"U has shape \(2, 5\); expected \(1, 5\)")
    _bad(rnn_loss_and_state, (params, Z0[:1], X, Y), r"rnn_loss_and_state: Z0 has shape \(1, 5\)")
    _bad(lambda *a: rnn_truncated_bptt_grads(*a, 0), (params, Z0, X, Y), r"chunk must be a positive int")
    for fn in (rnn_loss, rnn_loss_and_state, lambda *a: rnn_truncated_bptt_grads(*a, 2)):
        _bad(fn, (params, Z0, X, Y.tolist()), r"Y must be an array \(jax\.Array or numpy\.ndarray\); got a list")
    # no classes: refused by name, not NumPy's anonymous "zero-size array to reduction operation max"
    for fn, name in [(rnn_loss, "rnn_loss"), (rnn_loss_and_state, "rnn_loss_and_state")]:
        _bad(fn, (params._replace(V=V[:, :0], c=c[:0]), Z0, X, Y[..., :0]),
             rf"{name}: V has shape \(5, 0\); expected at least one column")


def test_concrete_labels_must_be_non_negative_and_finite():
    params, Z0, X, Y = rnn_case(0, 3, 4, 2, 5, 3, jnp.float64)
    for fn, name in [(rnn_loss, "rnn_loss"), (rnn_loss_and_state, "rnn_loss_and_state"),
                     (lambda *a: rnn_truncated_bptt_grads(*a, 2), "rnn_truncated_bptt_grads")]:
        with pytest.raises(ValueError, match=rf"{name}: Y must hold non-negative, finite label rows .*Y contains 1 negative or "
                                             r"non-finite value\(s\) \(first at index \(1, 2, 0\), value -0\.5\)"):
            fn(params, Z0, X, Y.at[1, 2, 0].set(-0.5))
        with pytest.raises(ValueError, match=rf"{name}: .*Y contains 2 negative or non-finite value\(s\) \(first at index "
                                             r"\(0, 0, 1\), value nan\)"):
            fn(params, Z0, X, np.asarray(Y.at[0, 0, 1].set(jnp.nan).at[2, 3, 2].set(jnp.inf)))
    assert np.isfinite(jax.jit(rnn_loss)(params, Z0, X, Y))  # under jit only shapes are checked


def test_bad_token_ids_labels_and_heads_are_named():
    params, Z0, X, Y = rnn_case(0, 3, 4, 2, 5, 3, jnp.float64)  # τ = 3, N = 4, D = 2, H = 5, K = 3
    ids, labels = jnp.zeros((3, 4), jnp.int32), jnp.zeros((3, 4), jnp.int32)
    _bad(rnn_loss, (params, Z0, X, labels[:2]), r"Y has shape \(2, 4\); expected \(3, 4\) \(integer labels")
    _bad(rnn_loss, (params, Z0, X, jax.nn.one_hot(labels, 3).astype(jnp.int32)), r"Y has shape \(3, 4, 3\); expected \(3, 4\)")
    _bad(rnn_loss, (params, Z0, X.astype(jnp.int32), Y), r"X must be 2-D with shape \(τ, N\) of token ids.*got shape \(3, 4, 2\)")
    _bad(rnn_loss, (params, Z0, ids[:, :3], Y), r"Z0 has shape \(4, 5\); expected \(3, 5\)")
    _bad(rnn_loss, (params, Z0, X, Y.astype(bool)), r"Y has dtype bool")
    with pytest.raises(ValueError, match=r"rnn_loss: X must hold token \(row of U\) indices in \[0, 2\); got \[2\] "
                                         r"\(first at index \(1, 3\)\)"):
        rnn_loss(params, Z0, ids.at[1, 3].set(2), Y)
    with pytest.raises(ValueError, match=r"rnn_loss_and_state: Y must hold class indices in \[0, 3\); got \[-1\]"):
        rnn_loss_and_state(params, Z0, ids, labels.at[0, 0].set(-1), head="fused")
    _bad(lambda *a: rnn_loss(*a, head="cut"), (params, Z0, X, Y),
         r"rnn_loss: head must be one of \('plain', 'fused'\); got 'cut'")
    _bad(lambda *a: rnn_loss(*a, block_size=4), (params, Z0, X, Y), r"block_size applies to head='fused' only")
    _bad(lambda *a: rnn_loss(*a, head="fused", block_size=0), (params, Z0, X, Y),
         r"rnn_loss: block_size: the vocabulary block must be a positive int; got 0")
    _bad(lambda *a: rnn_truncated_bptt_grads(*a, 2, head="fused", block_size=(0, 2)), (params, Z0, X, Y),
         r"the token block must be a positive int")


def test_bad_checkpoint_every_ignore_index_and_head_options_are_named():
    case = rnn_case(0, 3, 4, 2, 5, 3, jnp.float64)  # τ = 3, soft Y
    params, Z0, X, _ = case
    labels = jnp.zeros((3, 4), jnp.int32)
    for k in (0, -2, 2.0, True, np.array([2])):
        _bad(lambda *a, k=k: rnn_loss(*a, checkpoint_every=k), case,
             rf"rnn_loss: checkpoint_every must be a positive int \(steps per BPTT segment\) or None; got {re.escape(repr(k))}")
    _bad(lambda *a: rnn_loss_and_state(*a, checkpoint_every=4), case,
         r"rnn_loss_and_state: checkpoint_every must be at most X's steps, 3; got 4")
    _bad(lambda *a: rnn_truncated_bptt_grads(*a, 2, checkpoint_every=3), case,
         r"rnn_truncated_bptt_grads: checkpoint_every must be at most the chunk's steps \(chunk = 2, τ = 3\), 2; got 3")
    with pytest.raises(ValueError, match=r"rnn_loss: checkpoint_every is a traced value .*static_argnames='checkpoint_every'"):
        jax.jit(lambda k: rnn_loss(*case, checkpoint_every=k))(2)
    _bad(lambda *a: rnn_loss(*a, head_options={"z_loss": 0.1}), case,
         r"rnn_loss: head_options applies to head='fused' only; got head_options=\{'z_loss': 0.1\} with head='plain'")
    _bad(lambda *a: rnn_loss(*a, head="fused", head_options={"z_loss": -1.0}), case, r"rnn_loss: head_options\['z_loss'\]")
    _bad(lambda *a: rnn_loss(*a, head="fused", head_options={"softcap": 0.0}), case, r"rnn_loss: head_options\['softcap'\]")
    _bad(lambda *a: rnn_loss_and_state(*a, ignore_index=0), case,
         r"rnn_loss_and_state: ignore_index applies to integer labels Y only; got ignore_index=0 with floating Y")
    _bad(lambda *a: rnn_loss(*a, ignore_index=0.5), (params, Z0, X, labels), r"rnn_loss: ignore_index must be an int or None")
