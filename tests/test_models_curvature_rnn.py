"""Specification of the RNN models' Curvature (rnn_charlm, rnn_wordlm, rnn_temporal_order) for the second-order
optimizers, and of the temporal order problem's sequences: each model's factors give its own loss and
jax.grad(model.loss), KFLR's factors are the definitions' (mdc_jax.reference.curvature) scaled as the loss is,
ggn_vp is the explicit (G + wS)v and ggn_gram the explicit Vᵀ(G V), float64, on tiny sizes."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import get_model
from mdc_jax.reference import curvature as ref
from mdc_jax_models import temporal_order as to
from mdc_jax_models.rnn_lm import MAX_CURVATURE_VOCAB

from .helpers import assert_close

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
F64 = 1e-10

# Each model at a tiny size, from its shipped config, and its loss's scale over J (rnn_loss): 1/τ per token.
TINY = {
    "rnn_charlm": ("rnn_charlm.yaml", ["data.max_chars=3000", "model.hidden_size=2", "model.seq_len=2",
                                       "train.batch_size=2"], 1 / 2),
    # The plain head: the fused one trains the same loss (tests/test_language_models.py) and compiles slower.
    "rnn_wordlm": ("rnn_wordlm_stdlib.yaml", ["data.max_chars=20000", "model.vocab_size=12", "model.hidden_size=3",
                                              "model.seq_len=3", "model.head=plain", "train.batch_size=2"], 1 / 3),
    "rnn_temporal_order": ("temporal_order_adam.yaml", ["model.seq_len=10", "model.hidden_size=3",
                                                        "model.test_sequences=50", "train.batch_size=3"], 1.0),
}


def tiny(kind, *more):
    name, overrides, scale = TINY[kind]
    cfg = load_config(CONFIGS / name, [*overrides, *more])
    return cfg, get_model(kind).build(cfg), scale


def rel_norm(a, b) -> float:
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


def dense(kind, batch, vocab):
    """The batch as the one-hot rows the references take."""
    if kind == "rnn_wordlm":
        return tuple(jax.nn.one_hot(ids, vocab, dtype=jnp.float64) for ids in batch)
    return batch


# The word LM: scale 1/τ and token ids. The temporal order's curvature is the same rnn_curvature at scale 1: its loss
# and gradient are checked against model.loss in test_the_temporal_order_model_holds_out_... (suite time: one
# explicit GGN case).
@pytest.mark.parametrize("kind", ["rnn_wordlm"])
def test_each_rnn_models_curvature_is_its_loss_gradient_and_explicit_ggn_with_structural_damping_float64(kind):
    """factors: the loss, jax.grad(model.loss) and KFLR's factors scaled as the loss is (B by s, A not: c's block B_V
    is G's, exactly; A_V the states' mean Gram matrix); KFAC's have their structure; ggn_vp: s·(G + wS)v and
    ggn_gram: Vᵀ(sG)V against jax.jacfwd's explicit G and S (s: the loss's scale over J, 1/τ for a loss per token)."""
    _, model, scale = tiny(kind)
    to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64) if a.dtype == np.float32 else a),
                                     tree)  # by NumPy: no eager XLA op to compile per leaf
    params, batch = to64(model.init(jax.random.PRNGKey(0))), to64(jax.jit(model.batch)(jax.random.PRNGKey(1)))
    rng = np.random.default_rng(2)
    tangents = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    V = jax.tree.map(lambda p, t: jnp.stack([t, jnp.asarray(rng.normal(size=p.shape))]), params, tangents)  # k = 2
    vocab, c = params.U.shape[0], model.curvature

    def run(params, batch, tangents, V, w):
        X, Y = dense(kind, batch, vocab)
        Z0 = jnp.zeros((X.shape[1], params.W.shape[0]), X.dtype)
        G = jnp.sum(ref.rnn_batch_ggn(params, Z0, X, Y), axis=0)
        S = jnp.sum(ref.rnn_batch_structural(params, Z0, X), axis=0)
        Zs = ref.rnn_states(params, Z0, X)
        A_V = jnp.einsum("tnh,tng->hg", Zs, Zs) / (Zs.shape[0] * Zs.shape[1])
        return (c.factors(params, batch, None, True), jax.value_and_grad(model.loss)(params, batch),
                c.ggn_vp(params, batch, tangents, structural=w), ref.ggn_vp(scale * (G + w * S), params, tangents),
                scale * ref.blocks(G, params).c, A_V, c.ggn_gram(params, batch, V), ref.ggn_gram(scale * G, V))

    (loss, grads, kflr), (want_loss, want_grads), got, want, G_c, A_V, gram, want_gram = jax.jit(run)(
        params, batch, tangents, V, jnp.asarray(0.3))
    for what, a, b in [("loss", loss, want_loss), ("grads", grads, want_grads), ("(G + wS)v", got, want),
                       ("KFLR's B_c", kflr.c, G_c), ("KFLR's B_V", kflr.V[1], G_c), ("KFLR's A_V", kflr.V[0], A_V),
                       ("Vᵀ(sG)V", gram, want_gram)]:
        assert_close(a, b, F64, f"{kind}: {what}", atol=1e-14)
    for n in "WU":
        np.testing.assert_array_equal(getattr(kflr, n)[1], kflr.b, err_msg=f"{kind}: B_{n} is B_W, scaled once")
    kfac = jax.eval_shape(lambda: c.factors(params, batch, jax.random.key(3), False)[2])
    assert jax.tree.map(jnp.shape, kfac) == jax.tree.map(jnp.shape, kflr)


def test_the_char_lms_curvature_gives_its_loss_per_character_and_the_gradient_of_it_float64():
    """The char LM's Curvature is the word LM's (rnn_curvature, s = 1/τ) on one-hot batches: its loss and gradient
    are model.loss's and jax.grad's, and ggn_vp is linear in the structural weight, G v at w = 0."""
    _, model, _ = tiny("rnn_charlm")
    params, batch = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), (model.init(jax.random.PRNGKey(0)),
                                                                                     jax.jit(model.batch)(jax.random.PRNGKey(1))))
    c = model.curvature
    run = jax.jit(lambda p, b, w: (c.factors(p, b, None, True)[:2], jax.value_and_grad(model.loss)(p, b),
                                   [c.ggn_vp(p, b, p, structural=x) for x in (0.0, w, 2 * w)]))
    (loss, grads), (want_loss, want_grads), (g0, g1, g2) = run(params, batch, jnp.asarray(0.5))
    assert_close((loss, grads), (want_loss, want_grads), F64, "rnn_charlm: loss and grads", atol=1e-14)
    assert_close(jax.tree.map(lambda a, b: 2 * a - b, g1, g0), g2, F64, "rnn_charlm: (G + wS)v affine in w", atol=1e-14)
    assert rel_norm(g1, g0) > 1e-3


def test_the_temporal_order_sequences_follow_hochreiter_and_schmidhuber():
    """B first, E last, the two relevant symbols (X or Y) in their windows, distractors a–d elsewhere, the class
    (XX, XY, YX, YY) the relevant symbols' order, asked at the last step only; every position of each window
    and every class occurs; the draw is a jittable function of the key."""
    T, n = 20, 400
    draw = jax.jit(to.sequences, static_argnums=(1, 2))
    X, Y = map(np.asarray, draw(jax.random.PRNGKey(0), n, T))
    assert X.shape == (T, n, 8) and Y.shape == (T, n, 4) and X.dtype == Y.dtype == np.float32
    assert np.all(X.sum(-1) == 1) and np.all(Y[:-1] == 0) and np.all(Y[-1].sum(-1) == 1)
    ids, labels = X.argmax(-1).T, Y[-1].argmax(-1)  # (n, T), (n,)
    sym = to.SYMBOLS.index
    assert np.all(ids[:, 0] == sym("B")) and np.all(ids[:, -1] == sym("E"))
    relevant = (ids == sym("X")) | (ids == sym("Y"))
    assert np.all(relevant.sum(1) == 2)
    t1, t2 = np.argmax(relevant, axis=1), T - 1 - np.argmax(relevant[:, ::-1], axis=1)
    (lo1, hi1), (lo2, hi2) = to.windows(T)
    assert (lo1, hi1, lo2, hi2) == (2, 4, 10, 12) and to.windows(100) == ((10, 20), (50, 60))
    assert set(t1) == set(range(lo1, hi1 + 1)) and set(t2) == set(range(lo2, hi2 + 1))
    first, second = ids[np.arange(n), t1] == sym("Y"), ids[np.arange(n), t2] == sym("Y")
    np.testing.assert_array_equal(labels, 2 * first + second)
    assert set(labels) == {0, 1, 2, 3} and [to.CLASSES[k] for k in (1, 2)] == ["XY", "YX"]
    middle = ids[:, 1:-1][~relevant[:, 1:-1]]
    assert set(middle) == {0, 1, 2, 3}, "distractors a–d only, all of them"
    assert not np.array_equal(X, np.asarray(draw(jax.random.PRNGKey(1), n, T)[0]))


def test_the_temporal_order_model_holds_out_a_fixed_set_and_its_init_has_the_spectral_radius():
    cfg, model, _ = tiny("rnn_temporal_order", "model.hidden_size=16")
    params = model.init(jax.random.PRNGKey(0))
    assert np.isclose(np.max(np.abs(np.linalg.eigvals(np.asarray(params.W, np.float64)))), 1.1, rtol=1e-5)
    assert np.all(np.sum(np.asarray(params.W) != 0, axis=0) == 15), "15 incoming recurrent weights per unit"
    metrics = model.evaluate(params)
    assert set(metrics) == {"test_accuracy", "test_loss"} and model.primary == "test_accuracy"
    assert metrics == get_model("rnn_temporal_order").build(cfg).evaluate(params), "the held-out set is fixed"
    batch = jax.jit(model.batch)(jax.random.PRNGKey(1))  # its curvature describes its loss (per sequence: scale 1)
    (loss, grads, _), (want_loss, want_grads) = jax.jit(lambda p, b: (
        model.curvature.factors(p, b, jax.random.key(2), False), jax.value_and_grad(model.loss)(p, b)))(params, batch)
    assert_close((loss, grads), (want_loss, want_grads), 1e-4, "temporal order: factors' loss and gradient", atol=1e-6)


@pytest.mark.parametrize("override, match", [
    ("data.test_size=0.5", r"data\.test_size does not apply to data\.dataset 'temporal_order'.*model\.test_sequences"),
    ("data.max_chars=100", r"data\.max_chars does not apply"),
    ("model.seq_len=9", r"model\.seq_len must be >= 10"),
    ("model.init_radius=0", r"model\.init_radius must be a finite number > 0, got 0"),
    ("model.test_sequences=0", r"model\.test_sequences must be > 0, got 0"),
])
def test_temporal_order_config_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CONFIGS / "temporal_order_adam.yaml", [override])


@pytest.mark.parametrize("optimizer", ["kfac", "ggn_cg"])
def test_the_word_lm_refuses_second_order_optimizers_beyond_the_one_hot_vocabulary_limit(optimizer):
    cfg = load_config(CONFIGS / "rnn_wordlm_stdlib.yaml")  # vocab_size 16384
    cfg.optimizer.name = optimizer
    problems = cfg.model.validate(cfg)
    assert any(f"model.vocab_size 16384: optimizer.name {optimizer!r}" in p and f"at most {MAX_CURVATURE_VOCAB}" in p
               for p in problems), problems
    cfg.model.vocab_size = MAX_CURVATURE_VOCAB
    assert cfg.model.validate(cfg) == []
