"""Specification of the shipped models' fused output head (``model.head``) and the word-level LM
(``rnn_wordlm``): the fused head trains the same model as the plain one, the word LM's data, perplexity
and training run."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from mdc_jax import rnn_forward
from mdc_jax.experiment import dp
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import get_model
from mdc_jax.experiment.trainer import train
from mdc_jax_models import rnn_lm
from mdc_jax_models.data import UNKNOWN_WORD, WORD_TOKEN, load_text, load_words

from .helpers import assert_close

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DTYPE_PROMOTION = "standard"  # optax mixes Python floats with int32 step counts (see conftest.py)

# The shipped word-LM config, shrunk: a slice of the text, a 512-token vocabulary, a small state.
TINY_WORDLM = ["data.max_chars=60000", "model.vocab_size=512", "model.hidden_size=16", "model.seq_len=8",
               "model.eval_chunk=50", "train.steps=40", "train.batch_size=8", "optimizer.warmup_steps=2",
               "optimizer.learning_rate=0.03", "train.eval_every=40", "train.checkpoint_every=40", "train.log_every=10"]


def wordlm_config(*overrides):
    return load_config(CONFIGS / "rnn_wordlm_stdlib.yaml", [*TINY_WORDLM, *overrides])


def test_word_tokens_and_vocabulary_come_from_the_training_split():
    data = load_words(60_000, 0.1, 300)
    assert data.vocab[0] == UNKNOWN_WORD and len(data.vocab) == 300 == len(set(data.vocab))
    assert data.train.dtype == np.int32 and data.train.min() >= 0 and data.train.max() < 300
    tokens = WORD_TOKEN.findall("def f(x_1):\n    return x_1 + 42  # done")
    assert tokens == ["def", "f", "(", "x_1", ")", ":", "\n", "return", "x_1", "+", "42", "#", "done"]
    # Every kept token appears in the training split; the test split's other tokens are <unk> (0).
    big = load_words(60_000, 0.1, 10**6)  # the whole training vocabulary
    train_tokens = {big.vocab[i] for i in np.unique(big.train)}
    assert set(big.vocab[1:]) == train_tokens - {UNKNOWN_WORD}
    assert np.array_equal(big.test == 0, ~np.isin(big.test, np.arange(1, len(big.vocab))))
    assert np.array_equal(load_words(60_000, 0.1, 300).train, data.train)  # the same every time


def test_perplexity_carries_the_state_across_calls_and_equals_the_full_forward():
    """Evaluated in calls of 7 steps (not dividing the stream length), the perplexity is exp of the mean
    −ln p over every held-out token, from one forward pass over the whole streams."""
    key = jax.random.PRNGKey(0)
    params = rnn_lm.init_rnn(key, 40, 6, jnp.float64)
    ids = np.asarray(jax.random.randint(key, (16 * 23 + 1,), 0, 40), np.int32)
    length = (len(ids) - 1) // rnn_lm.EVAL_STREAMS
    streams = np.stack([ids[i * length:(i + 1) * length + 1] for i in range(rnn_lm.EVAL_STREAMS)])
    _, O = rnn_forward(params, jnp.zeros((16, 6), jnp.float64), jnp.asarray(streams[:, :-1].T))
    logp = jax.nn.log_softmax(O, axis=-1)
    nll = -np.mean(np.take_along_axis(np.asarray(logp), streams[:, 1:].T[..., None], axis=-1))
    for head in ("plain", "fused"):
        assert_close(rnn_lm.perplexity(params, ids, head, chunk=7), np.exp(nll), 1e-10, f"perplexity ({head})")


def test_the_word_lm_trains_and_reports_held_out_perplexity(tmp_path):
    run = train(wordlm_config(), out_dir=tmp_path / "run").run_dir
    summary = json.loads((run / "summary.json").read_text())
    assert summary["vocab_size"] == 512 and summary["primary_metric"] == "test_perplexity"
    assert 1 < summary["test_perplexity"] < 512  # better than a uniform guess over the vocabulary
    assert 1 < summary["unigram_test_perplexity"] < 512
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < np.log(512) - 0.5  # it learned: below the uniform loss ln K


@pytest.mark.parametrize("kind", ["rnn_wordlm", "rnn_charlm", "mlp_classifier"])
def test_the_fused_head_gives_each_model_the_plain_heads_loss_and_gradient(tmp_path, kind):
    """``model.head: fused`` changes how the logits are formed, not the model: the same loss and gradient on
    a batch, and with ``train.grad: autodiff`` the reference (which ignores the head) agrees."""
    if kind == "rnn_wordlm":
        load = lambda *o: wordlm_config(*o)
    else:
        path = {"rnn_charlm": CONFIGS / "rnn_charlm.yaml", "mlp_classifier": CONFIGS / "fcnn_classification_digits.yaml"}
        small = ["data.max_chars=20000", "model.hidden_size=8", "model.seq_len=6"] if kind == "rnn_charlm" else []
        load = lambda *o: load_config(path[kind], [*small, *o])
    models = {head: get_model(kind).build(load(f"model.head={head}")) for head in ("plain", "fused")}
    autodiff = get_model(kind).build(load("model.head=fused", "train.grad=autodiff"))
    params = models["plain"].init(jax.random.PRNGKey(1))
    batch = models["plain"].batch(jax.random.PRNGKey(2))
    grads = {name: jax.jit(jax.value_and_grad(m.loss))(params, batch)
             for name, m in [*models.items(), ("autodiff", autodiff)]}
    assert_close(grads["fused"], grads["plain"], 1e-4, f"{kind}: fused vs plain head")
    assert_close(grads["fused"], grads["autodiff"], 1e-4, f"{kind}: fused head vs autodiff")


def test_bad_head_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.head is 'cut'; expected one of plain, fused"):
        wordlm_config("model.head=cut")
    with pytest.raises(ConfigError, match=r"model\.vocab_size must be >= 2"):
        wordlm_config("model.vocab_size=1")
    path = tmp_path / "r.yaml"
    raw = yaml.safe_load(open(CONFIGS / "fcnn_regression_diabetes.yaml"))
    raw["model"]["head"] = "fused"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"model\.head 'fused' applies to mlp_classifier \(a softmax output\) only"):
        load_config(path)


# --------------------------------------------------------------------------------------------
# DP-SGD of the language models (train.dp), model.checkpoint_every and model.head_options

TINY_CHARLM = ["data.max_chars=20000", "model.hidden_size=8", "model.seq_len=6", "optimizer.warmup_steps=1",
               "train.batch_size=16"]
DP_ON = ["train.dp.clip_norm=1.0", "train.dp.noise_multiplier=2.0"]


def charlm_config(*overrides):
    return load_config(CONFIGS / "rnn_charlm.yaml", [*TINY_CHARLM, *overrides])


def training_ids(cfg) -> np.ndarray:
    """The training split's token ids the model of ``cfg`` reads."""
    if cfg.model.kind == "rnn_wordlm":
        return load_words(cfg.data.max_chars, cfg.data.test_size, cfg.model.vocab_size).train
    return load_text(cfg.data.max_chars, cfg.data.test_size).train


def as_ids(batch) -> tuple[np.ndarray, np.ndarray]:
    """A batch's inputs and targets as ``(N, τ)`` token ids (the char LM's one-hot rows by their index)."""
    return tuple(np.asarray(jnp.argmax(a, -1) if a.ndim == 3 else a).T for a in batch)


LMS = pytest.mark.parametrize("load", [wordlm_config, charlm_config], ids=["rnn_wordlm", "rnn_charlm"])


@LMS
def test_dp_sgd_trains_each_language_model_and_reports_epsilon_for_its_windows(tmp_path, load):
    """q = batch_size / (number of non-overlapping windows); ε is the PLD accountant's for 3 such steps."""
    cfg = load(*DP_ON, "train.steps=3", "train.eval_every=3", "train.log_every=3", "train.checkpoint_every=3")
    summary = train(cfg, out_dir=tmp_path / "run").summary
    windows = (len(training_ids(cfg)) - 1) // cfg.model.seq_len
    assert summary["dp"]["sampling_rate"] == cfg.train.batch_size / windows
    assert summary["epsilon"] == pytest.approx(dp.epsilon(3, cfg.train.batch_size / windows, 2.0, 1e-5), rel=1e-9)
    assert 0 < summary["epsilon"] < 1 and np.isfinite(summary[summary["primary_metric"]])


@LMS
def test_under_dp_an_example_is_a_non_overlapping_window_and_without_it_batches_keep_random_offsets(load):
    """Under train.dp the examples are the windows [jτ, (j+1)τ + 1): together their targets are every
    training token once. A batch (no train.dp) still takes batch_size windows at random offsets."""
    cfg, plain = load(*DP_ON), load()
    ids, tau, n = training_ids(cfg), cfg.model.seq_len, cfg.train.batch_size
    model = get_model(cfg.model.kind).build(cfg)
    assert model.examples == (len(ids) - 1) // tau
    X, Y = as_ids(jax.jit(model.gather)(jnp.arange(model.examples, dtype=jnp.int32)))  # one program, not op by op
    assert X.shape == Y.shape == (model.examples, tau)
    assert np.array_equal(X.ravel(), ids[:model.examples * tau])  # window j: tokens jτ .. (j+1)τ − 1 ...
    assert np.array_equal(Y.ravel(), ids[1:model.examples * tau + 1])  # ... and each target once, in no other window
    key = jax.random.PRNGKey(5)
    starts = np.asarray(jax.random.randint(key, (n,), 0, len(ids) - tau - 1, dtype=jnp.int32))
    X, Y = as_ids(jax.jit(get_model(plain.model.kind).build(plain).batch)(key))
    assert np.array_equal(X, np.stack([ids[s:s + tau] for s in starts]))
    assert np.array_equal(Y, np.stack([ids[s + 1:s + tau + 1] for s in starts]))


@pytest.mark.parametrize("load, overrides, message", [
    (wordlm_config, ["model.checkpoint_every=0"], r"model\.checkpoint_every must be in \[1, model\.seq_len = 8\] "
                                                  r"\(the BPTT segment length\), got 0"),
    (wordlm_config, ["model.checkpoint_every=9"], r"model\.checkpoint_every must be in \[1, model\.seq_len = 8\]"),
    (wordlm_config, ["model.checkpoint_every=2.5"], r"model\.checkpoint_every: expected an integer"),
    (charlm_config, ["model.checkpoint_every=7"], r"model\.checkpoint_every must be in \[1, model\.seq_len = 6\]"),
    (wordlm_config, ["model.head_options.z_loss=-1"], r"model\.head_options: z_loss must be a finite number >= 0"),
    (wordlm_config, ["model.head_options.label_smoothing=1"], r"model\.head_options: label_smoothing must be a "
                                                              r"number in \[0, 1\); got 1\.0"),
    (wordlm_config, ["model.head_options.softcap=0"], r"model\.head_options: softcap must be None or a finite number > 0"),
    (wordlm_config, ["model.head_options.temperature=2"], r"unknown key 'model\.head_options\.temperature'"),
    (wordlm_config, ["model.head=plain", "model.head_options.z_loss=0.1"], r"model\.head_options applies to "
                                                                           r"model\.head: fused"),
    (charlm_config, ["model.head_options.z_loss=0.1"], r"unknown key 'model\.head_options'"),
    (wordlm_config, ["train.grad=autodiff", "model.checkpoint_every=4"],
     r"model\.checkpoint_every is an option of the closed-form BPTT; train\.grad: autodiff"),
    (wordlm_config, [*DP_ON, "model.checkpoint_every=4"], r"model\.checkpoint_every with train\.dp and "
                                                          r"model\.head: fused: .* N copies of the H × K head"),
    (wordlm_config, ["optimizer.name=ggn_cg", "model.head_options.z_loss=0.1"],
     r"model\.head_options with optimizer\.name 'ggn_cg': the model's curvature is the plain head's"),
    (charlm_config, ["optimizer.name=kfac", "model.checkpoint_every=2"], r"model\.checkpoint_every with optimizer\.name"),
    (wordlm_config, [*DP_ON, "optimizer.name=kfac"], r"train\.dp with optimizer\.name 'kfac': the curvature would see"),
])
def test_options_a_language_model_cannot_honour_are_refused_at_load_naming_the_key(load, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(*overrides)


def test_model_checkpoint_every_trains_the_same_loss_and_gradient(monkeypatch):
    """k = 3 does not divide τ = 8 (a shorter last segment). Under train.dp (plain head) the option goes to
    the per-example clipping, whose segments mdc_jax.per_example's tests check against vmap(grad)."""
    models = [get_model("rnn_wordlm").build(wordlm_config(*o)) for o in ([], ["model.checkpoint_every=3"])]
    assert wordlm_config("model.checkpoint_every=null").model.checkpoint_every is None
    params = models[0].init(jax.random.PRNGKey(1))
    batch = models[0].batch(jax.random.PRNGKey(2))
    plain, segmented = [jax.jit(jax.value_and_grad(m.loss))(params, batch) for m in models]
    assert_close(segmented, plain, 1e-5, "model.checkpoint_every=3 against every state kept")
    calls, clipped = [], rnn_lm.per_example.rnn_clipped_grad
    static = ("checkpoint_every", "head", "clip_norm")
    monkeypatch.setattr(rnn_lm.per_example, "rnn_clipped_grad",
                        lambda *a, **kw: calls.append({k: kw[k] for k in static}) or clipped(*a, **kw))
    model = get_model("rnn_wordlm").build(wordlm_config(*DP_ON, "model.head=plain", "model.checkpoint_every=3"))
    jax.eval_shape(lambda p, b, w: model.clipped_grad(p, b, w, 0.1), params,
                   model.gather(jnp.arange(4, dtype=jnp.int32)), jnp.ones(4))  # traced, not compiled
    assert calls == [{"checkpoint_every": 3, "head": "plain", "clip_norm": 0.1 * 8}]


def test_head_options_reach_the_training_loss_and_only_the_softcap_reaches_the_perplexity():
    """z_loss adds z·mean(lse²) to the loss per token (and to the DP step's: unclipped, with C = 1e6, the DP
    step's gradient is the loss's), and leaves the held-out perplexity (the plain NLL) as it was; a softcap
    changes the model, so its perplexity too."""
    build = lambda *o: get_model("rnn_wordlm").build(wordlm_config(*o))
    plain, z, capped = build(), build("model.head_options.z_loss=0.5"), build("model.head_options.softcap=1.0")
    z_autodiff = build("model.head_options.z_loss=0.5", "train.grad=autodiff")
    params = plain.init(jax.random.PRNGKey(1))
    X, _ = batch = plain.batch(jax.random.PRNGKey(2))
    _, O = rnn_forward(params, jnp.zeros((X.shape[1], params.W.shape[0]), jnp.float32), X)
    lse = jax.nn.logsumexp(O, axis=-1)
    loss = jax.jit(lambda p, b: (plain.loss(p, b), jax.value_and_grad(z.loss)(p, b),
                                 z.clipped_grad(p, b, jnp.ones(X.shape[1]), 1e6), z_autodiff.loss(p, b)))
    J, (J_z, g_z), (J_z_dp, g_z_dp), J_z_autodiff = loss(params, batch)
    assert_close(J_z - J, 0.5 * jnp.mean(lse**2), 1e-4, "z_loss: z·mean lse² per token")
    assert_close((J_z_dp, g_z_dp), (J_z, g_z), 1e-5, "the DP step's loss and (unclipped) gradient have the z_loss too")
    assert_close(J_z_autodiff, J_z, 1e-5, "and so has the reference's (train.grad: autodiff)")
    assert z.evaluate(params) == plain.evaluate(params)
    assert capped.evaluate(params)["test_perplexity"] != pytest.approx(plain.evaluate(params)["test_perplexity"])
