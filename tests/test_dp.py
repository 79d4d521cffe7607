"""Specification of DP-SGD in `mdc-jax train` (train.dp): Poisson sampling, the clipped and noised
gradient, the accountant, the config checks, and the closed form against the vmap(grad) baseline."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from mdc_jax import cli, per_example
from mdc_jax.experiment import dp
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import get_model
from mdc_jax.experiment.trainer import train
from mdc_jax.testing import count_traces

DTYPE_PROMOTION = "standard"  # optax mixes Python floats with int32 step counts (see conftest.py)

DP = {"data": {"dataset": "digits"}, "model": {"kind": "mlp_classifier", "hidden": [16], "l2": 1.0e-3},
      "optimizer": {"name": "adam", "learning_rate": 3.0e-3},
      "train": {"steps": 30, "batch_size": 64, "eval_every": 15, "log_every": 15, "checkpoint_every": 15,
                "dp": {"clip_norm": 1.0, "noise_multiplier": 1.2, "delta": 1.0e-5}}}


def write(tmp_path, raw, name="dp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_poisson_sampling_draws_each_example_with_probability_q_padded_to_a_fixed_capacity():
    n, q = 500, 0.05
    capacity = dp.poisson_capacity(n, q)
    assert 25 < capacity < 80 and dp.poisson_capacity(10, 0.9) == 10  # never more than n
    draw = jax.jit(lambda k: dp.poisson_batch(k, n, q, capacity))
    counts, hits = [], np.zeros(n)
    for i in range(300):
        idx, valid = draw(jax.random.PRNGKey(i))
        assert idx.shape == valid.shape == (capacity,)
        chosen = np.asarray(idx)[np.asarray(valid)]
        assert len(set(chosen.tolist())) == len(chosen)  # without replacement
        assert np.all(np.asarray(valid)[: len(chosen)]) and not np.any(np.asarray(valid)[len(chosen):])
        counts.append(len(chosen))
        hits[chosen] += 1
    # Binomial(500, 0.05): mean 25, sd 4.9; over 300 draws the mean is within ±1 with overwhelming probability.
    assert abs(np.mean(counts) - n * q) < 1.5 and 3 < np.std(counts) < 7
    assert abs(hits.mean() / 300 - q) < 0.01 and hits.max() < 40  # every example alike


def test_without_noise_the_dp_gradient_is_the_clipped_sum_over_the_drawn_examples_over_q_n(tmp_path):
    cfg = load_config(write(tmp_path, DP), ["train.dp.noise_multiplier=0"])
    model = get_model("mlp_classifier").build(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0))  # one program, not op by op
    dp_grad, q, capacity = dp.make_dp_grad(model, cfg)
    key = jax.random.PRNGKey(7)
    _, grads = jax.jit(dp_grad)(params, key)
    idx, valid = jax.jit(dp.poisson_batch, static_argnums=(1, 2, 3))(jax.random.split(key)[0], model.examples, q, capacity)
    X, Y = model.gather(np.asarray(idx)[np.asarray(valid)])
    M = X.shape[0]

    # (1/M) Σ_drawn clip(g_i) with M drawn examples, rescaled to the expected batch size q·n = 64
    # (compiled as one program: op by op, each of its operations would compile on its own)
    @jax.jit
    def closed_form(params, X, Y):
        _, expected = per_example.fcnn_clipped_grad(params, X, Y, ["tanh"], 1e-3, clip_norm=1.0)
        penalty = [(1e-3 * W, jnp.zeros_like(b)) for W, b in params]
        return jax.tree.map(lambda g, p: (g - p) * M / 64 + p, expected, penalty)

    expected = closed_form(params, X, Y)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_noise_has_standard_deviation_sigma_c_over_the_expected_batch_size(tmp_path):
    cfg = load_config(write(tmp_path, DP), ["model.hidden=[64]"])
    model = get_model("mlp_classifier").build(cfg)
    # zero parameters of the model's shapes (init's shapes alone: nothing to compute)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    clean = load_config(write(tmp_path, DP, "clean.yaml"), ["model.hidden=[64]", "train.dp.noise_multiplier=0"])
    noisy, _, _ = dp.make_dp_grad(model, cfg)
    plain, _, _ = dp.make_dp_grad(model, clean)
    key = jax.random.PRNGKey(3)
    # One compiled program for both (as the trainer runs them: under jit), not op by op.
    diff = jax.jit(lambda p, k: jax.tree.map(jnp.subtract, noisy(p, k)[1], plain(p, k)[1]))(params, key)
    noise = np.concatenate([np.ravel(x) for x in jax.tree.leaves(diff)])
    assert noise.size > 4000 and np.std(noise) == pytest.approx(1.2 * 1.0 / 64, rel=0.05) and abs(np.mean(noise)) < 1e-3


def test_a_dp_run_reports_epsilon_from_dp_accounting_and_closed_equals_the_vmap_baseline(tmp_path, capsys):
    path = write(tmp_path, DP)
    assert cli.main(["train", str(path), "--set", "model.l2=0", "--out", str(tmp_path / "closed")]) == 0
    # The baseline run is only compared by its parameters: one evaluation (one accountant call) is enough.
    assert cli.main(["train", str(path), "--set", "train.grad=autodiff", "--set", "model.l2=0",
                     "--set", "train.eval_every=30", "--out", str(tmp_path / "autodiff")]) == 0
    summary = json.loads((tmp_path / "closed" / "summary.json").read_text())
    q = 64 / get_model("mlp_classifier").build(load_config(path)).examples
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.2)), 30)
    expected = dp_accounting.pld.PLDAccountant().compose(event).get_epsilon(1e-5)
    assert summary["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert summary["dp"] == {"clip_norm": 1.0, "noise_multiplier": 1.2, "delta": 1e-5, "accountant": "pld",
                             "sampling_rate": q}
    evals = [json.loads(line)["eval"] for line in (tmp_path / "closed" / "metrics.jsonl").read_text().splitlines()
             if "eval" in line]
    assert [e["epsilon"] > 0 for e in evals] == [True, True] and evals[0]["epsilon"] < evals[1]["epsilon"]
    # Same key, same Poisson draws and noise: the closed form and vmap(grad) train the same parameters.
    a, b = np.load(tmp_path / "closed" / "final.npz"), np.load(tmp_path / "autodiff" / "final.npz")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("override, message", [
    ("train.dp.clip_norm=0", r"train\.dp\.clip_norm must be > 0, got 0\.0"),
    ("train.dp.noise_multiplier=-1", r"train\.dp\.noise_multiplier must be >= 0"),
    ("train.dp.delta=1", r"train\.dp\.delta must be in \(0, 1\), got 1\.0"),
    ("train.dp.accountant=moments", r"train\.dp\.accountant is 'moments'; expected one of pld, rdp"),
    ("train.dp.sigma=1", r"unknown key 'train\.dp\.sigma'"),
    ("train.devices=2", r"train\.devices is 2, but only 1 device\(s\) are visible"),  # DP over several: test_distributed
    ("train.batch_size=5000", r"train\.batch_size 5000 is larger than the training set"),
])
def test_bad_dp_settings_exit_2_naming_the_key(tmp_path, capsys, override, message):
    code = cli.main(["train", str(write(tmp_path, DP)), "--set", override, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_dp_is_refused_for_a_solver_model_and_without_dp_the_section_is_absent(tmp_path, capsys):
    assert cli.main(["train", "logistic_breast_cancer", "--set", "train.dp.clip_norm=1",
                     "--set", "train.dp.noise_multiplier=1", "--out", str(tmp_path / "run")]) == 2
    assert "fitted by a solver" in capsys.readouterr().err
    assert load_config(write(tmp_path, {**DP, "train": {"steps": 5}})).train.dp is None


@pytest.mark.parametrize("kind, raw", [
    ("mlp_regressor", {"data": {"dataset": "diabetes"}, "model": {"kind": "mlp_regressor", "hidden": [8]}}),
    ("char_rnn", {"data": {"dataset": "python_source", "max_chars": 4000},
                  "model": {"kind": "rnn_charlm", "hidden_size": 8, "seq_len": 5}}),
])
def test_each_models_closed_form_clipping_equals_clipping_vmap_of_grad_of_its_loss(tmp_path, kind, raw):
    raw = {**raw, "train": {"steps": 2, "batch_size": 6, "dp": {"clip_norm": 0.05, "noise_multiplier": 1.0}}}
    cfg = load_config(write(tmp_path, raw))
    model = get_model(raw["model"]["kind"]).build(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(1))
    batch = model.gather(jnp.arange(6, dtype=jnp.int32) * 7)
    weights = jnp.asarray([1.0, 0.0, 2.0, 1.0, 1.0, 0.5], jnp.float32)
    # Both under jit, as the trainer runs them (op by op, each operation would compile on its own).
    loss, grads = jax.jit(lambda p, b, w: model.clipped_grad(p, b, w, 0.05))(params, batch, weights)
    loss_v, grads_v = jax.jit(lambda p, b, w: dp.vmap_clipped_grad(model.loss, model.batch_axes, p, b, w, 0.05))(
        params, batch, weights)
    np.testing.assert_allclose(loss, loss_v, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_v)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-7)


def test_a_noise_multiplier_the_accountant_cannot_account_for_is_refused_at_load_naming_the_key(tmp_path, capsys):
    """σ = 1e-6 under PLD once trained and then asked the accountant for 35.5 PiB at the first evaluation."""
    path = write(tmp_path, DP)
    with pytest.raises(ConfigError, match=r"train\.dp\.noise_multiplier 1e-06 is below 0\.5, the smallest σ the PLD "
                                          r"accountant .* Use train\.dp\.accountant: rdp"):
        load_config(path, ["train.dp.noise_multiplier=1e-6"])
    assert cli.main(["train", str(path), "--set", "train.dp.noise_multiplier=1e-6", "--out", str(tmp_path / "run")]) == 2
    assert "train.dp.noise_multiplier 1e-06 is below 0.5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was built or written
    # The RDP accountant accounts for it (a huge ε, at once), and σ = 0 stays "clipping without noise".
    cfg = load_config(path, ["train.dp.noise_multiplier=1e-6", "train.dp.accountant=rdp"])
    assert 1e12 < dp.epsilon(30, 0.05, cfg.train.dp.noise_multiplier, 1e-5, "rdp") < float("inf")
    assert load_config(path, ["train.dp.noise_multiplier=0"]).train.dp.noise_multiplier == 0
    with pytest.raises(ConfigError, match=r"train\.dp\.noise_multiplier 1e-300 is below 1e-100, the smallest σ the RDP"):
        load_config(path, ["train.dp.noise_multiplier=1.0e-300", "train.dp.accountant=rdp"])


def test_an_accountant_out_of_memory_names_the_accountant_and_is_never_blamed_on_xla(tmp_path, capsys, monkeypatch):
    def out_of_memory(self, event, count=1):
        raise MemoryError("Unable to allocate 35.5 PiB for an array with shape (5000000000000000,)")

    monkeypatch.setattr(dp_accounting.pld.PLDAccountant, "compose", out_of_memory)
    path = write(tmp_path, {**DP, "train": {**DP["train"], "steps": 2, "eval_every": 2}})
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert ("the PLD accountant of dp-accounting (train.dp.accountant: pld) ran out of memory computing ε for "
            "σ = 1.2 over 2 steps (Unable to allocate 35.5 PiB") in err and err.endswith("number of steps")
    assert "35.5 PiB" in err and "XLA" not in err and "reduce model sizes" not in err
    # Any other Python MemoryError is not XLA's either: only RESOURCE_EXHAUSTED names the model sizes.
    assert cli._runtime_error("train", MemoryError("Unable to allocate 8 GiB")) == 1
    err = capsys.readouterr().err
    assert "out of host memory: MemoryError: Unable to allocate 8 GiB" in err and "reduce model sizes" not in err


def test_a_dp_batch_larger_than_the_data_is_refused_as_an_expected_poisson_batch(tmp_path, capsys):
    assert cli.main(["train", str(write(tmp_path, DP)), "--set", "train.batch_size=5000",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert ("train.batch_size 5000 is larger than the training set (1437 examples); with train.dp it is the "
            "expected batch size q·N of Poisson sampling") in err
    assert "drawn with replacement" not in err, err


def test_a_sweep_whose_grid_sets_a_required_key_validates_each_grid_point(tmp_path, capsys):
    """train.dp.clip_norm is required in train.dp; here only the grid gives it."""
    raw = {**DP, "model": {**DP["model"], "hidden": [4]},
           "train": {**DP["train"], "steps": 2, "eval_every": 2, "dp": {"noise_multiplier": 1.0}}}
    path = write(tmp_path, raw)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(path), "--grid", "train.dp.clip_norm=0.5,1.0", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["overrides"] for r in rows] == [["train.dp.clip_norm=0.5"], ["train.dp.clip_norm=1.0"]]
    summaries = [json.loads((Path(r["run_dir"]) / "summary.json").read_text()) for r in rows]
    assert [s["dp"]["clip_norm"] for s in summaries] == [0.5, 1.0]
    # A required key that no grid point sets is still refused, naming it.
    assert cli.main(["sweep", str(path), "--grid", "train.dp.delta=1.0e-5,1.0e-6", "--out", str(tmp_path / "s2")]) == 2
    assert "missing required key 'train.dp.clip_norm'" in capsys.readouterr().err
    assert not (tmp_path / "s2").exists()


def test_a_dp_run_traces_its_step_once(tmp_path):
    cfg = load_config(write(tmp_path, {**DP, "train": {**DP["train"], "steps": 4, "eval_every": 2,
                                                       "checkpoint_every": 2, "log_every": 1}}))
    with count_traces() as traces:
        train(cfg, out_dir=tmp_path / "run")
    assert traces["train_step"] == 1, dict(traces)


def test_a_saved_run_whose_sigma_its_accountant_cannot_account_for_resumes_with_another(tmp_path, capsys):
    """A run saved before the σ floor (σ = 0.3 under PLD) is refused naming the key, and resumes with
    `--set train.dp.accountant=rdp`: the accountant only reports ε."""
    path = write(tmp_path, {**DP, "model": {**DP["model"], "hidden": [4]},
                            "train": {**DP["train"], "steps": 2, "eval_every": 2, "checkpoint_every": 1}})
    run = tmp_path / "run"
    assert cli.main(["train", str(path), "--out", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["train"]["dp"]["noise_multiplier"] = 0.3
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 2
    assert "train.dp.noise_multiplier 0.3 is below 0.5" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=3", "--set", "train.dp.accountant=rdp"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_step"] == 2 and summary["dp"]["accountant"] == "rdp" and summary["epsilon"] > 0
    # Anything else in train.dp still may not change on a resume.
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=4", "--set", "train.dp.clip_norm=2"]) == 2
    assert "saved config.yaml at train.dp;" in capsys.readouterr().err
