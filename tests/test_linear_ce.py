"""Specification of the fused linear + softmax cross-entropy head (seed 000 §6.3.1, blocked) against
jax.grad of the plain head and optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mdc_jax
from mdc_jax.reference import linear_ce as ref
from mdc_jax.reference.linear_ce import linear_ce_case
from mdc_jax.rules import linear_ce

from .helpers import assert_close

lce = mdc_jax.linear_softmax_cross_entropy


@st.composite
def setups(draw):
    n, d, k = draw(st.integers(1, 9)), draw(st.integers(1, 5)), draw(st.integers(2, 13))
    blocks = draw(st.one_of(st.none(), st.tuples(st.integers(1, 10), st.integers(1, 16))))
    return (draw(st.integers(0, 2**31 - 1)), n, d, k, blocks, draw(st.sampled_from(["mean", "sum", "none"])),
            draw(st.sampled_from(["int", "ignore", "soft"])))


def rule_and_reference(Z, W, b, labels, kw, blocks, ct, soft):
    """``(value, cotangents)`` of the blocked head and of the plain reference under the cotangent ``ct``: for
    ``Z``, ``W``, ``b`` (and soft labels), one compiled program."""
    argnums = (0, 1, 2, 3) if soft else (0, 1, 2)

    def both(Z, W, b, labels):
        def grads(f):
            value, vjp = jax.vjp(lambda *a: f(*a, **kw), Z, W, b, labels)
            return value, [vjp(ct)[i] for i in argnums]

        return grads(lambda *a, **k: lce(*a, **k, block_size=blocks)), grads(ref.linear_softmax_cross_entropy)

    return jax.jit(both)(Z, W, b, labels)


@settings(max_examples=6)
@given(setups())
@example((0, 1, 1, 2, None, "mean", "int"))  # N = 1, K = 2
@example((1, 5, 3, 3, (2, 8), "none", "ignore"))  # a vocabulary block larger than K
@example((2, 9, 4, 13, (4, 5), "sum", "soft"))  # blocks dividing neither N nor K
def test_loss_and_gradients_match_the_plain_head_float64(setup):
    seed, n, d, k, blocks, reduction, labels_kind = setup
    Z, W, b, labels = linear_ce_case(seed, n, d, k, jnp.float64, soft=labels_kind == "soft")
    kw = {"reduction": reduction}
    if labels_kind == "ignore":
        labels = labels.at[::2].set(-100)
        kw["ignore_index"] = -100
    ct = jnp.asarray(np.random.default_rng(seed).normal(size=n)) if reduction == "none" else jnp.asarray(1.5)
    (value, g), (ref_value, ref_g) = rule_and_reference(Z, W, b, labels, kw, blocks, ct, labels_kind == "soft")
    assert_close(value, ref_value, 1e-10, f"loss ({reduction}, {labels_kind}, blocks {blocks})", atol=1e-13)
    assert_close(g, ref_g, 1e-10, f"gradients ({reduction}, {labels_kind}, blocks {blocks})", atol=1e-13)


def test_float32_matches_optax_with_default_blocks():
    Z, W, b, labels = linear_ce_case(3, 64, 16, 300, jnp.float32)
    plain = lambda Z, W, b: optax.softmax_cross_entropy_with_integer_labels(Z @ W + b[None, :], labels).mean()
    got = jax.jit(jax.value_and_grad(lambda *a: lce(*a, labels), (0, 1, 2)))(Z, W, b)
    expected = jax.jit(jax.value_and_grad(plain, (0, 1, 2)))(Z, W, b)
    assert got[0].dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in got[1])
    assert_close(got, expected, 1e-4, "float32 vs optax", atol=1e-7)


def test_bfloat16_inputs_accumulate_in_float32():
    Z, W, b, labels = linear_ce_case(4, 32, 8, 50, jnp.float32)
    grad = jax.jit(jax.value_and_grad(lambda *a: lce(*a, labels, block_size=(8, 16)), (0, 1, 2)))
    (v16, g16), (v32, g32) = grad(*(x.astype(jnp.bfloat16) for x in (Z, W, b))), grad(Z, W, b)
    assert v16.dtype == jnp.float32 and [g.dtype for g in g16] == [jnp.bfloat16] * 3
    assert abs(float(v16) - float(v32)) < 2e-2 * abs(float(v32))
    for a, c in zip(g16, g32):
        assert float(jnp.max(jnp.abs(a.astype(jnp.float32) - c))) < 2e-2 * float(jnp.max(jnp.abs(c)))


def test_logits_of_1e4_give_finite_correct_results():
    Z, W, b, labels = linear_ce_case(5, 6, 3, 7, jnp.float64)
    Z = Z * 1e4 / jnp.max(jnp.abs(Z @ W))  # logits up to ±1e4
    f = jax.value_and_grad(lambda *a: lce(*a, labels, block_size=(4, 3)), (0, 1, 2))
    r = jax.value_and_grad(lambda *a: ref.linear_softmax_cross_entropy(*a, labels), (0, 1, 2))
    got32 = f(*(x.astype(jnp.float32) for x in (Z, W, b)))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(got32))
    assert_close(f(Z, W, b), r(Z, W, b), 1e-10, "logits of 1e4, float64")


def test_the_logits_are_never_held_whole():
    N, d, K = 256, 8, 4096  # N × K float32 logits: 4 MiB
    Z, W, b, labels = linear_ce_case(6, N, d, K, jnp.float32)
    fused = jax.jit(jax.value_and_grad(lambda *a: lce(*a, labels, block_size=(64, 512)), (0, 1, 2)))
    plain = jax.jit(jax.value_and_grad(lambda *a: ref.linear_softmax_cross_entropy(*a, labels), (0, 1, 2)))
    opts = {"block_size": (64, 512), "z_loss": 1e-4, "label_smoothing": 0.1, "softcap": 30.0, "return_lse": True}
    with_options = jax.jit(jax.value_and_grad(lambda *a: sum(map(jnp.sum, lce(*a, labels, **opts))), (0, 1, 2)))
    temp = lambda f: f.lower(Z, W, b).compile().memory_analysis().temp_size_in_bytes
    assert max(temp(fused), temp(with_options)) < N * K * 4 / 4 < temp(plain)  # one block of 64 × 512, not 256 × 4096


def test_wide_int64_labels_out_of_range_under_jit_are_zero_rows():
    """A label of 2**32 + 1 (int64, under jit: not checked) is the zero row its one-hot is, not class 1:
    the range is tested before any narrowing cast."""
    Z, W, b, labels = linear_ce_case(8, 4, 3, 5, jnp.float64)
    wide = labels.astype(jnp.int64).at[1].set(2**32 + 1).at[2].set(-(2**32) + 2)
    rows = jax.nn.one_hot(wide, 5, dtype=jnp.float64)
    assert not rows[1].any() and not rows[2].any()
    for reduction in ("none", "mean"):
        loss = lambda Z, W, b, y: jnp.sum(lce(Z, W, b, y, reduction=reduction))
        got = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(Z, W, b, wide)  # labels traced: not checked
        assert_close(got, jax.value_and_grad(loss, (0, 1, 2))(Z, W, b, rows), 1e-12, f"int64 labels ({reduction})")
    assert float(jax.jit(lambda *a: lce(*a, reduction="none"))(Z, W, b, wide)[1]) == 0


def test_all_ignored_tokens_give_zero_loss_and_gradients():
    Z, W, b, _ = linear_ce_case(7, 4, 3, 5, jnp.float64)
    value, grads = jax.value_and_grad(lambda *a: lce(*a, jnp.full(4, -1), ignore_index=-1), (0, 1, 2))(Z, W, b)
    assert value == 0 and all(float(jnp.max(jnp.abs(g))) == 0 for g in grads)


@pytest.mark.parametrize("change, match", [
    (lambda a: (a[0], a[1], a[2], a[3].at[0].set(5)), r"labels must hold class indices in \[0, 5\).*\[5\] \(first at row 0\)"),
    (lambda a: (a[0], a[1], a[2], a[3].astype(jnp.float64)), r"labels has dtype float64 and shape \(4,\); expected integer"),
    (lambda a: (a[0][:, :2], a[1], a[2], a[3]),
     r"W has shape \(3, 5\); expected \(2, 5\) \(its rows must equal Z's columns, d = 2\)"),
    (lambda a: (a[0], a[1], a[2][:4], a[3]), r"b has shape \(4,\); expected \(5,\)"),
    (lambda a: (a[0], a[1], a[2], a[3][:3]), r"labels has shape \(3,\); expected \(4,\)"),
    (lambda a: (a[0], a[1], a[2], a[3].tolist()), r"labels must be an array"),
])
def test_bad_input_names_the_argument(change, match):
    args = linear_ce_case(0, 4, 3, 5, jnp.float64)
    with pytest.raises(ValueError, match=f"linear_softmax_cross_entropy: {match}"):
        lce(*change(args))


@pytest.mark.parametrize("kw, match", [
    ({"block_size": 0}, r"the vocabulary block must be a positive int; got 0"),
    ({"block_size": (2, -1)}, r"the vocabulary block must be a positive int"),
    ({"block_size": (0, 4)}, r"the token block must be a positive int"),
    ({"block_size": (1, 2, 3)}, r"block_size must be an int \(vocabulary block\) or a pair"),
    ({"reduction": "avg"}, r"reduction must be one of"),
    ({"ignore_index": 1.5}, r"ignore_index must be an int or None"),
])
def test_bad_options_name_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        lce(*linear_ce_case(0, 4, 3, 5, jnp.float64), **kw)


def test_soft_labels_refuse_ignore_index_and_negative_rows():
    Z, W, b, Y = linear_ce_case(0, 4, 3, 5, jnp.float64, soft=True)
    with pytest.raises(ValueError, match=r"ignore_index applies to integer labels only"):
        lce(Z, W, b, Y, ignore_index=0)
    with pytest.raises(ValueError, match=r"labels must hold non-negative, finite label rows"):
        lce(Z, W, b, -Y)
    assert linear_ce.default_blocks(4096, 32768) == (512, 8192)


def test_bool_labels_no_classes_and_a_traced_ignore_index_are_refused_by_name():
    """Issue 20 review: bool labels (N,) are refused naming both alternatives, integer class indices (N,) or
    floating rows (N, K), as before the checks moved into _validation; W without columns is refused by name."""
    Z, W, b, labels = linear_ce_case(0, 4, 3, 5, jnp.float64)
    with pytest.raises(ValueError, match=r"linear_softmax_cross_entropy: labels has dtype bool and shape \(4,\); "
                                         r"expected integer class indices of shape \(4,\), or floating .* \(4, 5\)"):
        lce(Z, W, b, labels > 2)
    with pytest.raises(ValueError, match=r"W has shape \(3, 0\); expected at least one column \(K >= 1 classes"):
        lce(Z, W[:, :0], b[:0], labels)
    with pytest.raises(ValueError, match=r"ignore_index is a traced value .*it must be static"):
        jax.jit(lambda i: lce(Z, W, b, labels, ignore_index=i))(1)
    assert float(lce(Z, W, b, labels, ignore_index=np.int64(-1))) == float(lce(Z, W, b, labels))


# --- Options (issue 23): z-loss, label smoothing, softcap, return_lse --------------------------

OPTION_CASES = [  # (options, labels, reduction, blocks, return_lse); N = 9, K = 13: blocks divide neither
    ({"z_loss": 0.3}, "int", "mean", (4, 5), False),
    ({"label_smoothing": 0.25}, "soft", "sum", (4, 5), False),
    ({"z_loss": 0.1, "label_smoothing": 0.2, "softcap": 2.0}, "ignore", "none", (2, 4), True),
    ({"z_loss": 0.05, "label_smoothing": 0.3, "softcap": 0.7}, "soft", "mean", (3, 6), True),
]


@pytest.mark.parametrize("options, labels_kind, reduction, blocks, return_lse", OPTION_CASES)
def test_options_match_the_plain_head_float64(options, labels_kind, reduction, blocks, return_lse):
    """Loss, lse and the gradients of Z, W, b (and soft labels) under a random cotangent of the loss and of lse,
    against jax.grad of the plain head; soft row 0 is a zero row (an ignored token) that smoothing keeps zero."""
    n, k = 9, 13
    Z, W, b, labels = linear_ce_case(11, n, 4, k, jnp.float64, soft=labels_kind == "soft")
    kw = {"reduction": reduction, "return_lse": return_lse, **options}
    if labels_kind == "ignore":
        labels, kw["ignore_index"] = labels.at[::3].set(-100), -100
    if labels_kind == "soft":
        labels = labels.at[0].set(0.0)
    rng = np.random.default_rng(1)
    ct = jnp.asarray(rng.normal(size=n)) if reduction == "none" else jnp.asarray(1.5)
    ct = (ct, jnp.asarray(rng.normal(size=n))) if return_lse else ct
    (value, g), (ref_value, ref_g) = rule_and_reference(Z, W, b, labels, kw, blocks, ct, labels_kind == "soft")
    what = f"{options}, {labels_kind}, {reduction}, blocks {blocks}"
    assert_close(value, ref_value, 1e-10, f"loss (and lse): {what}", atol=1e-13)
    assert_close(g, ref_g, 1e-10, f"gradients: {what}", atol=1e-13)
    if labels_kind == "ignore" and reduction == "none":
        assert not np.any(np.asarray(value[0])[::3])  # ignored tokens: loss 0 under smoothing


def test_options_float32_match_optax_and_the_z_loss_definition():
    """Label smoothing is optax.smooth_labels + optax.softmax_cross_entropy of the capped logits (integer labels
    and probability rows); the z-loss adds z·mean(lse²) of the capped logits; lse is jax.nn.logsumexp of them."""
    K, alpha, c, z = 100, 0.1, 5.0, 1e-2
    Z, W, b, labels = linear_ce_case(12, 48, 8, K, jnp.float32, scale=3.0)
    Y = linear_ce_case(13, 48, 8, K, jnp.float32, soft=True)[3]

    def plain(Z, W, b, Y):
        A = c * jnp.tanh((Z @ W + b[None, :]) / c)
        lse = jax.nn.logsumexp(A, axis=-1)
        return jnp.mean(optax.softmax_cross_entropy(A, optax.smooth_labels(Y, alpha)) + z * lse**2), lse

    def fused(Z, W, b, Y):
        return lce(Z, W, b, Y, block_size=(16, 32), z_loss=z, label_smoothing=alpha, softcap=c, return_lse=True)

    def check(Z, W, b, labels, Y):
        onehot = jax.nn.one_hot(labels, K, dtype=jnp.float32)
        run = lambda f, y: (jax.value_and_grad(lambda *a: f(*a)[0], (0, 1, 2))(Z, W, b, y), f(Z, W, b, y)[1])
        return [run(fused, labels), run(fused, Y)], [run(plain, onehot), run(plain, Y)]

    got, expected = jax.jit(check)(Z, W, b, labels, Y)
    assert got[0][0][0].dtype == jnp.float32
    assert_close(got, expected, 1e-4, "float32 options vs optax", atol=1e-6)


def test_return_lse_is_the_capped_logsumexp_and_its_gradient_is_applied():
    """lse alone (the loss's cotangent 0): its value and its gradient are those of jax.nn.logsumexp of the capped
    logits, ignored tokens included; the loss returned beside it is the loss without return_lse."""
    Z, W, b, labels = linear_ce_case(14, 5, 3, 7, jnp.float64)
    labels, w, c = labels.at[1].set(-1), jnp.asarray(np.random.default_rng(2).normal(size=5)), 1.2
    kw = {"block_size": (2, 3), "softcap": c, "z_loss": 0.2, "ignore_index": -1}

    def both(Z, W, b):
        lse_part = lambda *a: jnp.sum(w * lce(*a, labels, return_lse=True, **kw)[1])
        plain = lambda Z, W, b: jnp.sum(w * jax.nn.logsumexp(c * jnp.tanh((Z @ W + b[None, :]) / c), axis=-1))
        return (jax.value_and_grad(lse_part, (0, 1, 2))(Z, W, b), jax.value_and_grad(plain, (0, 1, 2))(Z, W, b),
                lce(Z, W, b, labels, return_lse=True, **kw)[0], lce(Z, W, b, labels, **kw))

    got, expected, loss_with, loss_without = jax.jit(both)(Z, W, b)
    assert_close(got, expected, 1e-12, "lse and its gradient")
    assert float(loss_with) == float(loss_without)


def test_ignored_tokens_stay_zero_under_every_option():
    Z, W, b, _ = linear_ce_case(7, 4, 3, 5, jnp.float64)
    opts = {"z_loss": 0.5, "label_smoothing": 0.2, "softcap": 1.0, "ignore_index": -1, "block_size": (3, 2)}
    value, grads = jax.jit(jax.value_and_grad(lambda *a: lce(*a, jnp.full(4, -1), **opts), (0, 1, 2)))(Z, W, b)
    assert value == 0 and all(float(jnp.max(jnp.abs(g))) == 0 for g in grads)


@pytest.mark.parametrize("kw, match", [
    ({"z_loss": -0.1}, r"z_loss must be a finite number >= 0; got -0.1"),
    ({"z_loss": float("inf")}, r"z_loss must be a finite number >= 0; got inf"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\); got 1.0"),
    ({"label_smoothing": -0.1}, r"label_smoothing must be a number in \[0, 1\); got -0.1"),
    ({"label_smoothing": "0.1"}, r"label_smoothing must be a number in \[0, 1\); got '0.1'"),
    ({"softcap": 0.0}, r"softcap must be None or a finite number > 0; got 0.0"),
    ({"softcap": -30}, r"softcap must be None or a finite number > 0; got -30"),
    ({"return_lse": 1}, r"return_lse must be a bool \(True or False\); got 1"),
])
def test_bad_head_options_name_the_argument_and_value(kw, match):
    with pytest.raises(ValueError, match=f"linear_softmax_cross_entropy: {match}"):
        lce(*linear_ce_case(0, 4, 3, 5, jnp.float64), **kw)


def test_head_options_from_none_a_mapping_or_head_options_and_bad_keys_named():
    fn = "rnn_loss"
    assert linear_ce.head_options(fn, None) == linear_ce.HeadOptions() == linear_ce.HeadOptions(0.0, 0.0, None)
    opts = linear_ce.head_options(fn, {"z_loss": 1, "softcap": np.float32(30)})
    assert opts == linear_ce.HeadOptions(1.0, 0.0, 30.0) and type(opts.z_loss) is float and hash(opts)
    assert linear_ce.head_options(fn, opts) == opts
    with pytest.raises(ValueError, match=r"rnn_loss: head_options has unknown key\(s\) \['zloss'\]; expected keys from "
                                         r"\('z_loss', 'label_smoothing', 'softcap'\)"):
        linear_ce.head_options(fn, {"zloss": 1e-4})
    with pytest.raises(ValueError, match=r"rnn_loss: head_options\['label_smoothing'\] must be a number in \[0, 1\); "
                                         r"got 1.5"):
        linear_ce.head_options(fn, linear_ce.HeadOptions(label_smoothing=1.5))
    with pytest.raises(ValueError, match=r"rnn_loss: model.head_options\['softcap'\] must be None or a finite number > 0"):
        linear_ce.head_options(fn, {"softcap": 0}, name="model.head_options")
    with pytest.raises(ValueError, match=r"rnn_loss: head_options must be None, a HeadOptions or a mapping"):
        linear_ce.head_options(fn, [0.1])
