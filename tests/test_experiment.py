"""Specification of config-driven training: validation, run directory, determinism, resume after
SIGKILL, non-finite loss, and sweeps (data parallelism, in one process and across processes: test_distributed.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from mdc_jax import cli
from mdc_jax.experiment.checkpoint import latest_checkpoint, list_checkpoints
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import find_config, get_model, register_model, unregister_model
from mdc_jax.experiment.trainer import NonFiniteLoss, make_optimizer, train
from mdc_jax.testing import count_traces
from mdc_jax_models.data import load_classification, load_regression

REPO = Path(__file__).resolve().parents[1]
DTYPE_PROMOTION = "standard"  # optax mixes Python floats with int32 step counts (see conftest.py)

SMALL = {
    "data": {"dataset": "digits"},
    "model": {"kind": "mlp_classifier", "hidden": [16], "activation": "tanh", "l2": 1.0e-4},
    "optimizer": {"name": "adam", "learning_rate": 1.0e-2},
    "train": {"steps": 40, "batch_size": 32, "seed": 0, "checkpoint_every": 10, "eval_every": 20, "log_every": 10},
}


def write_config(tmp_path: Path, raw=SMALL, name="small.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def load_npz(path: Path) -> dict:
    with np.load(path) as d:
        return {k: d[k] for k in d}


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


# ---------------------------------------------------------------------------------------------
# Configs


def test_shipped_configs_validate_and_are_found_by_name_but_never_instead_of_a_path(tmp_path):
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.name == path.stem
        assert find_config(path.stem).samefile(path) and find_config(path.name).samefile(path)
    missing = tmp_path / "nosuchdir" / "logistic_breast_cancer.yaml"
    assert find_config(missing) == missing
    with pytest.raises(ConfigError, match=r"nosuchdir/logistic_breast_cancer\.yaml: no such config file"):
        load_config(find_config(missing))


@pytest.mark.parametrize("change, message", [
    ({"train": {**SMALL["train"], "stepz": 3}}, r"small\.yaml: unknown key 'train\.stepz'"),
    ({"train": {**SMALL["train"], "steps": "many"}}, r"small\.yaml: train\.steps: expected an integer, got str 'many'"),
    ({"train": {"seed": 0}}, r"small\.yaml: missing required key 'train\.steps'"),
    ({"model": {**SMALL["model"], "hidden": 16}}, r"model\.hidden: expected a list"),
    ({"optimizer": {"name": "adamax"}}, r"optimizer\.name is 'adamax'; expected one of sgd, momentum, adam, adamw"),
    ({"data": {"dataset": "digits", "test_size": 1.5}}, r"data\.test_size must be in \(0, 1\)"),
    ({"model": {**SMALL["model"], "kind": "mlp"}}, r"model\.kind: unknown model kind 'mlp'; registered kinds: .*mlp_classifier"),
    ({"model": {**SMALL["model"], "seq_len": 8}},
     r"unknown key 'model\.seq_len'; allowed keys in model: activation, head, hidden, kind, l2"),
    ({"model": {**SMALL["model"], "hidden": [0]}}, r"model\.hidden widths must be > 0"),
    ({"model": {**SMALL["model"], "activation": "swishy"}}, r"model\.activation is 'swishy'; expected one of"),
    ({"data": {"dataset": "diabetes"}}, r"data\.dataset 'diabetes' does not fit model\.kind 'mlp_classifier'"),
    ({"model": {"hidden": [4]}}, r"missing required key 'model\.kind'"),
    ({"optimizer": {"schedule": "warmup_cosine", "warmup_steps": 40}},
     r"optimizer\.warmup_steps \(40\) must be < train\.steps \(40\) for the warmup_cosine schedule"),
    ({"data": {"dataset": "python_source", "max_chars": 100}, "model": {"kind": "rnn_charlm", "seq_len": 200}},
     r"model\.seq_len 200 needs more text: data\.max_chars 100 leaves 80 training characters"),
    ({"data": {"dataset": "python_source", "max_chars": 100, "test_size": 0.1}, "model": {"kind": "rnn_charlm", "seq_len": 8}},
     r"leaves 10 held-out characters; evaluation needs at least 17"),
])
def test_config_errors_name_the_file_and_the_dotted_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, {**SMALL, **change}))


def test_yaml_1_1_exponent_strings_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SMALL).replace("0.01", "1e-2"))  # YAML 1.1 reads 1e-2 as a string
    assert yaml.safe_load(path.read_text())["optimizer"]["learning_rate"] == "1e-2"
    cfg = load_config(path, ["train.steps=7", "optimizer.learning_rate=3e-4", "model.hidden=[8, 8]"])
    assert cfg.optimizer.learning_rate == 3e-4 and cfg.train.steps == 7 and cfg.model.hidden == [8, 8]
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.steps: expected an integer, got float 1\.5"):
        load_config(path, ["train.steps=1.5"])
    with pytest.raises(ConfigError, match=r"unknown key 'train\.nope'"):
        load_config(path, ["train.nope=1"])
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE"):
        load_config(path, ["train.steps"])


def test_unsafe_yaml_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


# ---------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One finished run of SMALL (40 steps, checkpoints at 10..40), trained once per test process."""
    folder = tmp_path_factory.mktemp("small_run")
    return train(load_config(write_config(folder)), out_dir=folder / "run").run_dir


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A private copy of a run directory, for a test that damages or resumes it."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_run_directory_holds_everything(small_run):
    run = small_run
    for name in ["config.yaml", "metrics.jsonl", "summary.json", "final.npz", "train_loss.png", "eval.png"]:
        assert (run / name).is_file(), name
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [10, 20, 30, 40]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in records if "eval" in r] == [20, 40]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.5 and summary["time_per_step_ms"] > 0 and summary["wall_time_s"] > 0
    assert set(load_npz(run / "final.npz")) == {"0/0", "0/1", "1/0", "1/1"}
    assert load_config(run / "config.yaml").train.steps == 40  # the resolved config is itself a valid config


def test_a_run_traces_its_step_once(tmp_path):
    """The step is compiled once per run: a retrace (a Python value that changes with the step, an
    input whose dtype drifts) would compile it again at every step."""
    with count_traces() as traces:
        train(load_config(write_config(tmp_path), ["train.steps=6"]), out_dir=tmp_path / "run")
    assert traces["train_step"] == 1, dict(traces)


def test_same_config_gives_bit_identical_parameters_and_grad_switch_agrees(small_run, tmp_path):
    path = write_config(tmp_path)
    a = small_run  # the module fixture's run of the same config
    b = train(load_config(path), out_dir=tmp_path / "b").run_dir
    assert_bit_identical(load_npz(a / "final.npz"), load_npz(b / "final.npz"))
    c = train(load_config(path, ["train.grad=autodiff"]), out_dir=tmp_path / "c").run_dir
    for k, v in load_npz(a / "final.npz").items():
        np.testing.assert_allclose(v, load_npz(c / "final.npz")[k], rtol=1e-3, atol=1e-4)


def mdc_jax_cli(*args) -> list[str]:
    return [sys.executable, "-m", "mdc_jax.cli", *map(str, args)]


def test_resume_after_sigkill_is_bit_identical(tmp_path, subprocess_env):
    """As a user runs it: separate `mdc-jax train` processes, one killed with SIGKILL and resumed. The optimizer
    is adaptive K-FAC, whose state is the richest (factor averages, inverses, damping, the last update); Adam's
    resume is checked in-process below (test_resume_from_the_run_directory_alone_extends_the_run), ggn_cg's and
    the other K-FAC modes' in tests/test_optim_training.py."""
    raw = {**SMALL, "optimizer": {"name": "kfac", "adaptive": True, "damping": 0.1},
           "train": {**SMALL["train"], "steps": 200, "checkpoint_every": 5, "eval_every": 100}}
    path = write_config(tmp_path, raw)
    # The three processes compile the same programs: XLA's persistent cache (conftest.py) compiles them once.
    env = subprocess_env
    reference = tmp_path / "uninterrupted"
    subprocess.run(mdc_jax_cli("train", path, "--out", reference), check=True, capture_output=True, cwd=REPO, env=env)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(mdc_jax_cli("train", path, "--out", killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(killed / "checkpoints")) < 3 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(killed / "checkpoints")
    assert done and done[-1][0] < 200, "the run finished before it could be killed; make it longer"
    # Leave debris like a kill during a write would: a half-written temporary file.
    (killed / "checkpoints" / f"ckpt-{done[-1][0] + 5:08d}.npz.tmp").write_bytes(b"PK\x03\x04 partial")

    # Resumed from the run directory alone: its own config.yaml, no config path or --set repeated.
    subprocess.run(mdc_jax_cli("train", "--resume", killed), check=True, capture_output=True, cwd=REPO, env=env)
    assert_bit_identical(load_npz(reference / "final.npz"), load_npz(killed / "final.npz"))
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], "eval" in r) for r in records]
    assert keys == sorted(keys) and len(keys) == len(set(keys))  # no duplicated records after resume
    assert keys == [(r["step"], "eval" in r) for r in map(json.loads, (reference / "metrics.jsonl").read_text().splitlines())]


def test_damaged_newest_checkpoints_fall_back_to_the_newest_readable_one(small_run, tmp_path, capsys):
    run = copy_of(small_run, tmp_path)
    good = (run / "checkpoints" / "ckpt-00000040.npz").read_bytes()
    damaged = {"ckpt-00000050.npz": b"not a zip", "ckpt-00000060.npz": b"", "ckpt-00000070.npz": good[: len(good) // 2]}
    for name, content in damaged.items():
        (run / "checkpoints" / name).write_bytes(content)
    # Readable files whose step is not a non-negative integer 0-d array equal to the step of the name.
    arrays = load_npz(run / "checkpoints" / "ckpt-00000040.npz")
    for step, value in [(80, np.asarray(40)), (90, np.asarray(-5)), (100, np.asarray([100])), (110, np.asarray(110.0))]:
        np.savez(run / "checkpoints" / f"ckpt-{step:08d}.npz", **{**arrays, "step": value})
        damaged[f"ckpt-{step:08d}.npz"] = None
    cfg = load_config(run / "config.yaml")
    params = get_model(cfg.model.kind).build(cfg).init(jax.random.PRNGKey(0))
    restored = latest_checkpoint(run / "checkpoints", params, make_optimizer(cfg).init(params))
    assert restored is not None and restored[2] == 40
    out, warnings = capsys.readouterr()
    assert "skipping" not in out  # warnings go to stderr, beside the error that refers to them
    assert all(f"skipping damaged checkpoint {run / 'checkpoints' / name}" in warnings for name in damaged)
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=45"]) == 0
    assert all((run / "checkpoints" / name).exists() for name in damaged)  # nothing is deleted


def test_a_run_whose_checkpoints_are_all_damaged_is_not_restarted_quietly(small_run, tmp_path, capsys):
    run = copy_of(small_run, tmp_path)
    for _, path in list_checkpoints(run / "checkpoints"):
        path.write_bytes(b"")
    assert cli.main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "none of its 4 checkpoint(s) can be read" in err and "--start-over" in err
    assert cli.main(["train", "--resume", str(run), "--start-over"]) == 0
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 0


def test_resume_with_a_different_config_is_refused(small_run, tmp_path):
    path = write_config(tmp_path)
    run = copy_of(small_run, tmp_path)
    for change, key in [("model.hidden=[8]", "model.hidden"), ("data.dataset=wine", "data.dataset"),
                        ("data.split_seed=3", "data.split_seed")]:
        assert cli.main(["train", str(path), "--set", change, "--resume", str(run)]) == 2
        with pytest.raises(ConfigError, match=rf"saved config\.yaml at {key}\b"):
            train(load_config(path, [change]), resume=run)
    with pytest.raises(ConfigError, match=r"saved config\.yaml at model\.hidden"):
        train(load_config(REPO / "configs" / "fcnn_classification_digits.yaml"), resume=run)
    # The optimizer's settings may change, but not into another optimizer state.
    with pytest.raises(ConfigError, match=r"optimizer state has \d+ arrays; the config's optimizer has \d+"):
        train(load_config(path, ["optimizer.name=sgd"]), resume=run)


def test_the_demo_checks_trains_and_times_a_config_through_the_trainer(tmp_path, capsys):
    assert cli.main(["demo", str(write_config(tmp_path)), "--steps", "20", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"max relative error closed vs jax\.grad = \S+ \[ok\]", out)
    assert "test_accuracy: " in out and re.search(r"closed [\d.]+ µs, autodiff [\d.]+ µs, ratio [\d.]+", out)
    assert (tmp_path / "run" / "final.npz").is_file() and (tmp_path / "run" / "summary.json").is_file()
    assert cli.main(["demo", str(REPO / "configs" / "logistic_breast_cancer.yaml")]) == 2
    assert "is fitted by a solver; the demo trains by gradient steps" in capsys.readouterr().err


def test_a_batch_larger_than_the_training_set_is_refused_before_training(tmp_path, capsys):
    path = write_config(tmp_path, {**SMALL, "train": {**SMALL["train"], "batch_size": 5000}})
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size 5000 is larger than the training set (1437 samples)" in err
    assert "batches are drawn with replacement" in err  # true without train.dp (see test_dp.py for Poisson)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_finite_training_data_is_refused_before_the_first_step_naming_row_and_column(tmp_path, capsys):
    spec = get_model("mlp_classifier")

    def build_with_a_nan(cfg):
        model = spec.build(cfg)
        X = np.array(model.data["X_train"])
        X[7, 3] = np.nan
        X[9, 0] = np.inf
        return model._replace(data={"X_train": X})

    register_model(dataclasses.replace(spec, kind="mlp_with_a_nan", build=build_with_a_nan))
    try:
        path = write_config(tmp_path, {**SMALL, "model": {**SMALL["model"], "kind": "mlp_with_a_nan"}})
        assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    finally:
        unregister_model("mlp_with_a_nan")
    err = capsys.readouterr().err
    assert "data.dataset 'digits': X_train contains 2 NaN or inf value(s) (first at row 7, column 3, value nan)" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("setup, argv, message", [
    (lambda d: (d / "c.yaml").write_text("- a\n- b\n"), ["train", "{d}/c.yaml"], r"c\.yaml: the file must be a mapping"),
    (lambda d: (d / "c.yaml").write_text("just a string\n"), ["train", "{d}/c.yaml"], r"got a YAML str"),
    (lambda d: (d / "c").mkdir(), ["train", "{d}/c"], r"c: is a directory; expected a YAML config file"),
    (lambda d: (d / "c.yaml").write_text("data:\n  dataset: [digits\nmodel: {}\n"), ["train", "{d}/c.yaml"],
     r"c\.yaml: not valid YAML: line \d+, column \d+: "),
    (lambda d: (d / "c.yaml").write_text("data: !!python/object/apply:os.system ['echo hi']\n"), ["train", "{d}/c.yaml"],
     r"not valid YAML: line 1, column 7: .*python/\.\.\. tags are refused"),
    (lambda d: None, ["train", "{small}", "--out", "{small}"], r"exists and is not a directory"),
    (lambda d: None, ["sweep", "{small}", "--grid", "train.steps=1,[", "--out", "{d}/s"], r"--grid 'train\.steps=\['"),
    (lambda d: None, ["sweep", "{small}", "--grid", "train.stepz=1,2", "--out", "{d}/s"],
     r"unknown key 'train\.stepz'.*\(with --grid train\.stepz=1\)"),
    (lambda d: None, ["demo", "{small}", "--steps", "-1"], r"train\.steps must be > 0, got -1"),
    (lambda d: None, ["gradcheck", "--seeds", "0"], r"--seeds must be >= 1"),
    (lambda d: None, ["gradcheck", "--rule", "nope"], r"--rule: unknown rule 'nope'; registered rules: "),
    (lambda d: None, ["train", "{small}", "--start-over"], r"--start-over applies to --resume RUN_DIR only"),
    # keys of mixed types, numbers beyond range, seeds, non-finite floats, octal-looking integers
    (lambda d: (d / "c.yaml").write_text("1: x\nfoo: y\n"), ["train", "{d}/c.yaml"], r"c\.yaml: unknown key '1'"),
    (lambda d: None, ["train", "{small}", "--set", "optimizer.learning_rate=" + "9" * 400],
     r"optimizer\.learning_rate: expected a finite number"),
    (lambda d: None, ["train", "{small}", "--set", "train.steps=" + "9" * 5000],
     r"--set 'train\.steps=.*train\.steps is not valid YAML: .*an integer of 5000 digits is too large"),
    (lambda d: None, ["train", "{small}", "--set", "train.steps=" + "9" * 400], r"train\.steps: 9+\.\.\. .* out of range"),
    (lambda d: None, ["train", "{small}", "--set", "train.seed=4294967296"], r"train\.seed must be in \[0, 2\*\*32 - 1\]"),
    (lambda d: None, ["demo", "{small}", "--seed", "99999999999999999999999"], r"train\.seed: 9+ is out of range"),
    (lambda d: None, ["train", "{small}", "--set", "data.split_seed=-1"], r"data\.split_seed must be in \[0, 2\*\*32 - 1\]"),
    (lambda d: None, ["train", "{small}", "--set", "optimizer.learning_rate=.inf"],
     r"optimizer\.learning_rate: expected a finite number, got inf"),
    (lambda d: None, ["train", "{small}", "--set", "optimizer.momentum=.nan"], r"optimizer\.momentum: expected a finite"),
    (lambda d: None, ["train", "{small}", "--set", "optimizer.decay_rate=1e999"], r"optimizer\.decay_rate: expected a finite"),
    (lambda d: None, ["train", "{small}", "--set", "model.l2=-.inf"], r"model\.l2: expected a finite number"),
    (lambda d: None, ["train", "{small}", "--set", "train.tol=0"], r"train\.tol must be > 0"),
    (lambda d: None, ["train", "{small}", "--set", "train.steps=010"], r"train\.steps: 010 has a leading zero"),
    (lambda d: (d / "c.yaml").write_text(yaml.safe_dump(SMALL).replace("hidden:\n  - 16", "hidden:\n  - 016")),
     ["train", "{d}/c.yaml"], r"c\.yaml: model\.hidden\[0\]: 016 has a leading zero"),
    # files that are not configs
    (lambda d: None, ["train", "/dev/null"], r"/dev/null: is not a regular file"),  # /dev/zero was read forever
    (lambda d: (d / "c.yaml").write_bytes(b"#" * (5 * 2**20)), ["train", "{d}/c.yaml"],
     r"c\.yaml: is 5242880 bytes; a config file is at most 4 MiB"),
    (lambda d: (d / "c.yaml").write_text("train:\n  steps: 1\ntrain:\n  steps: 2\n"), ["train", "{d}/c.yaml"],
     r"c\.yaml: not valid YAML: line 3, column 1: found duplicate key 'train'"),
    (lambda d: (d / "c.yaml").write_text("[" * 100_000), ["train", "{d}/c.yaml"], r"c\.yaml: not valid YAML: nested too deeply"),
    # the run name, the data split and sizes no machine holds: refused when the config is loaded
    (lambda d: None, ["train", "{small}", "--set", "name=../../escaped"], r"name '\.\./\.\./escaped': expected a plain name"),
    (lambda d: None, ["train", "{small}", "--set", "name=.."], r"name '\.\.': expected a plain name"),
    (lambda d: None, ["train", "{small}", "--set", "data.test_size=1.0e-9"],
     r"data\.test_size 1e-09 splits data\.dataset 'digits' \(1797 samples\) into 1796 training and 1 held-out"),
    (lambda d: None, ["train", "{small}", "--set", "data.test_size=0.9999"], r"into 0 training and 1797 held-out"),
    (lambda d: None, ["train", "{small}", "--set", "model.hidden=[100000000000]"],
     r"model\.hidden \[100000000000\]: a weight matrix would have more than 2\*\*31 - 1 entries"),
    # output paths: --out new or empty, never '', never with --resume
    (lambda d: None, ["train", "{small}", "--out", ""], r"--out: expected a directory path, got an empty string"),
    (lambda d: None, ["sweep", "{small}", "--out", ""], r"--out: expected a directory path"),
    (lambda d: (d / "proj").mkdir() or (d / "proj" / "config.yaml").write_text("mine\n"),
     ["train", "{small}", "--out", "{d}/proj"], r"--out \S+/proj: exists and is not empty; .*--resume \S+/proj"),
    (lambda d: (d / "proj").mkdir() or (d / "proj" / "notes.txt").write_text("mine\n"),
     ["demo", "{small}", "--out", "{d}/proj"], r"--out \S+/proj: exists and is not empty"),
    (lambda d: (d / "s").mkdir() or (d / "s" / "sweep.md").write_text("mine\n"),
     ["sweep", "{small}", "--out", "{d}/s"], r"--out \S+/s: exists and is not empty"),
    (lambda d: None, ["train", "{small}", "--resume", "{d}", "--out", "{d}/elsewhere"],
     r"--out and --resume cannot be combined: the run directory is RUN_DIR"),
    (lambda d: None, ["sweep", "{small}", "--grid", "train.seed=0,1", "--grid", "train.seed=2", "--out", "{d}/s"],
     r"--grid train\.seed: given twice"),
    # a file to write at the end of a long check: checked first
    (lambda d: None, ["gradcheck", "--json", "{d}"], r"--json \S+: is a directory; expected a file path"),
    (lambda d: None, ["gradcheck", "--json", "{d}/nodir/x.json"],
     r"--json \S+/nodir/x\.json: the folder \S+/nodir does not exist"),
])
def test_bad_cli_input_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, setup, argv, message):
    setup(tmp_path)
    small = write_config(tmp_path)
    code = cli.main([a.format(d=tmp_path, small=small) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    for user_file in tmp_path.glob("*/*"):  # a refused command writes nothing, and over nothing
        assert user_file.read_text() == "mine\n", user_file
    assert not (tmp_path / "elsewhere").exists()


def test_bench_usage_names_the_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--only", "foo"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("usage: mdc-jax bench ")


def test_split_errors_of_the_data_loaders_name_data_test_size():
    with pytest.raises(ConfigError, match=r"^data\.test_size 1e-09 splits data\.dataset 'digits'"):
        load_classification("digits", 1e-9)
    with pytest.raises(ConfigError, match=r"^data\.test_size 0\.9999 splits data\.dataset 'diabetes' .* 0 training"):
        load_regression("diabetes", 0.9999)


def test_an_existing_run_is_never_trained_over_and_a_refused_resume_changes_nothing(small_run, tmp_path, capsys):
    run = copy_of(small_run, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert cli.main(["train", str(run / "config.yaml"), "--out", str(run)]) == 2
    assert f"--resume {run}" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--out", str(tmp_path / "other")]) == 2
    assert "--out and --resume cannot be combined" in capsys.readouterr().err
    # A resume that could not write its checkpoints is refused before it changes anything.
    checkpoints = run / "checkpoints"
    shutil.move(checkpoints, tmp_path / "moved")
    checkpoints.write_text("not a folder")
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=50"]) == 2
    assert f"{checkpoints} is not a directory" in capsys.readouterr().err
    checkpoints.unlink()
    shutil.move(tmp_path / "moved", checkpoints)
    (checkpoints / "ckpt-00000050.npz").mkdir()
    assert [s for s, _ in list_checkpoints(checkpoints)] == [10, 20, 30, 40]
    assert f"skipping {checkpoints / 'ckpt-00000050.npz'}: named like a checkpoint but not a file" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=60"]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoints / 'ckpt-00000050.npz'} is not a file" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not list(checkpoints.glob("*.tmp")) and not (tmp_path / "other").exists()


def test_lines_of_metrics_jsonl_that_are_not_records_are_skipped_with_a_warning_and_kept(small_run, tmp_path, capsys):
    run = copy_of(small_run, tmp_path)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "not json", '{"no": "step"}', '{"step": "7"}', *lines[1:]]) + "\n")
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=41"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {metrics}: skipping line(s) 2, 3, 4: not a JSON record" in err and "Traceback" not in err
    kept = metrics.read_text().splitlines()
    assert kept[1:4] == ["not json", '{"no": "step"}', '{"step": "7"}'] and json.loads(kept[-1])["step"] == 41
    assert (run / "train_loss.png").is_file()


def test_non_finite_parameters_after_the_last_step_are_a_non_finite_stop(tmp_path, capsys):
    path = write_config(tmp_path, {**SMALL, "optimizer": {"name": "sgd", "learning_rate": 1.0e+300},
                                   "train": {**SMALL["train"], "steps": 1, "checkpoint_every": 1}})
    run = tmp_path / "run"
    with np.errstate(over="ignore"):  # 1e300 is inf in float32
        assert cli.main(["train", str(path), "--out", str(run)]) == 3
    err = capsys.readouterr().err
    assert "non-finite parameters after step 1, the last step; no checkpoint was written yet" in err
    assert not (run / "final.npz").exists() and not (run / "summary.json").exists()
    assert list_checkpoints(run / "checkpoints") == []


def test_plots_are_optional_and_a_run_name_in_any_script_or_bytes_trains(tmp_path, capsys, monkeypatch, recwarn):
    path = write_config(tmp_path, {**SMALL, "train": {**SMALL["train"], "steps": 1}})
    odd = tmp_path / os.fsdecode(b"bad\xffname-\xe5\x90\x8d")  # not UTF-8, then a CJK character DejaVu lacks
    assert cli.main(["train", str(path), "--out", str(odd)]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and (odd / "train_loss.png").is_file(), err
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    from mdc_jax.experiment import trainer

    def broken_plot(run_dir, primary):
        raise TypeError("a long matplotlib message\nover several lines")

    monkeypatch.setattr(trainer, "plot_run", broken_plot)
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.strip() == (f"warning: could not draw the plots in {tmp_path / 'run'}: TypeError: a long matplotlib "
                           f"message")
    assert (tmp_path / "run" / "final.npz").is_file()


def test_an_xla_failure_is_one_line_and_exit_1(tmp_path, capsys):
    spec = get_model("mlp_classifier")

    def build_out_of_memory(cfg):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 400000000000 "
                                         "bytes.\nmore detail")

    register_model(dataclasses.replace(spec, kind="mlp_out_of_memory", build=build_out_of_memory))
    try:
        path = write_config(tmp_path, {**SMALL, "model": {**SMALL["model"], "kind": "mlp_out_of_memory"}})
        assert cli.main(["train", str(path), "--out", str(tmp_path / "run")]) == 1
    finally:
        unregister_model("mlp_out_of_memory")
    err = capsys.readouterr().err
    assert err.startswith("mdc-jax train: error: XLA ran out of memory (RESOURCE_EXHAUSTED: Out of memory")
    assert "reduce model sizes or train.batch_size" in err and len(err.strip().splitlines()) == 1


def test_resume_from_the_run_directory_alone_extends_the_run(tmp_path, capsys):
    """`mdc-jax train --resume RUN_DIR --set train.steps=N` continues from the run's own config.yaml."""
    path = write_config(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", str(path), "--out", str(run)]) == 0
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=60"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["resumed_from_step"] == 40
    assert load_config(run / "config.yaml").train.steps == 60
    longer = train(load_config(path, ["train.steps=60"]), out_dir=tmp_path / "straight").run_dir
    assert_bit_identical(load_npz(longer / "final.npz"), load_npz(run / "final.npz"))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=30"]) == 2
    assert "train.steps is 30, but the run's newest checkpoint is at step 60" in capsys.readouterr().err
    assert load_config(run / "config.yaml").train.steps == 60  # a refused resume changes nothing
    assert cli.main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory (no config.yaml)" in capsys.readouterr().err
    assert cli.main(["train"]) == 2
    assert "give a config" in capsys.readouterr().err


def test_a_run_directory_written_before_models_had_their_own_options_still_resumes(small_run, tmp_path):
    """Older config.yaml files list every model key of every kind, at their defaults."""
    run = copy_of(small_run, tmp_path)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["model"].update(hidden_size=128, seq_len=64, fit_intercept=True)
    raw["name"] = "my config ü"  # named after a config file, before run names were checked
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["train", "--resume", str(run), "--set", "train.steps=50"]) == 0
    assert load_config(run / "config.yaml").name == "my_config__"
    assert load_config(write_config(tmp_path, name="my config ü.yaml")).name == "my_config__"


def test_non_finite_loss_stops_at_that_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    raw = {"data": {"dataset": "diabetes"}, "model": {"kind": "mlp_regressor", "hidden": [8]},
           "optimizer": {"name": "sgd", "learning_rate": 1.0e+6},
           "train": {"steps": 200, "batch_size": 16, "checkpoint_every": 1, "eval_every": 100, "log_every": 1}}
    path = write_config(tmp_path, raw)
    code = cli.main(["train", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3
    step = int(err.split("at step ")[1].split(";")[0])
    assert "non-finite loss" in err
    kept = list_checkpoints(tmp_path / "run" / "checkpoints")
    # Every step checkpoints here. The parameters after step − 1 gave the non-finite loss at `step`,
    # so the newest checkpoint is that of step − 2, whose parameters gave a finite loss at step − 1.
    assert kept and kept[-1][0] == step - 2
    assert str(kept[-1][1]) in err
    with pytest.raises(NonFiniteLoss):
        train(load_config(path), out_dir=tmp_path / "again")
    # The run continues from that checkpoint with a lower learning rate (the model and data are unchanged).
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--set", "optimizer.learning_rate=1.0e-3"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_from_step"] == step - 2 and np.isfinite(summary["test_r2"])


def test_sweep_writes_a_table(tmp_path):
    path = write_config(tmp_path, {**SMALL, "train": {**SMALL["train"], "steps": 10}})
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(path), "--grid", "train.grad=closed,autodiff", "--out", str(out)]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert [r["overrides"] for r in rows] == [["train.grad=closed"], ["train.grad=autodiff"]]
    table = (out / "sweep.md").read_text().splitlines()
    assert table[0].startswith("| config |") and len(table) == 4


@pytest.mark.parametrize("config", ["logistic_breast_cancer.yaml", "multinomial_wine.yaml"])
def test_newton_models_train_with_either_derivatives(tmp_path, config):
    path = REPO / "configs" / config
    closed = train(load_config(path), out_dir=tmp_path / "closed").summary
    auto = train(load_config(path, ["train.grad=autodiff"]), out_dir=tmp_path / "auto").summary
    assert closed["converged"] and auto["converged"] and closed["grad"] == "closed" and auto["grad"] == "autodiff"
    assert closed["test_accuracy"] == auto["test_accuracy"] >= 0.95
    assert abs(closed["test_accuracy"] - closed["sklearn_test_accuracy"]) <= 0.01
    for k, v in load_npz(tmp_path / "closed" / "final.npz").items():
        np.testing.assert_allclose(load_npz(tmp_path / "auto" / "final.npz")[k], v, rtol=1e-8, atol=1e-10)
