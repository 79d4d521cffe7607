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
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import get_model
from mdc_jax.experiment.trainer import train
from mdc_jax_models import rnn_lm
from mdc_jax_models.data import UNKNOWN_WORD, WORD_TOKEN, load_words

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
