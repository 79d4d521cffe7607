"""Specification of second-order training in `mdc-jax train`: ``optimizer.name: kfac | ggn_cg`` fed by a
model's :class:`~mdc_jax.experiment.models.Curvature`, their config checks, their runs, checkpoints and
resumes, and the ``time_s`` of every metrics record.

The model is a user's own (registered here, as docs/models.md describes): a 4-6-3 tanh classifier on 96
fixed points, its Curvature from :mod:`mdc_jax.curvature` without the optional ``ggn_gram``, so adaptive K-FAC
runs on the Gram matrix the trainer forms from ``ggn_vp`` (the shipped models' own ``ggn_gram`` is checked in
tests/test_models_curvature*.py). Each run is a few steps: compilation dominates.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import mdc_jax
from mdc_jax.curvature import fcnn_ggn_gram, fcnn_ggn_vp, fcnn_quantities
from mdc_jax.experiment import trainer
from mdc_jax.experiment.checkpoint import list_checkpoints
from mdc_jax.experiment.config import ConfigError, load_config
from mdc_jax.experiment.models import Curvature, Model, ModelOptions, ModelSpec, register_model, unregister_model
from mdc_jax.experiment.trainer import train
from mdc_jax.testing import count_traces

DTYPE_PROMOTION = "standard"  # optax mixes Python floats with int32 step counts (see conftest.py)

N, D, K, ACTS = 96, 4, 3, ("tanh",)


@dataclasses.dataclass
class TinyOptions(ModelOptions):
    hidden: int = 6


def tiny_data():
    """96 points of 4 features, 3 classes from two half-planes: fixed, so every run sees the same set."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    labels = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    return jnp.asarray(X), jnp.asarray(np.eye(K, dtype=np.float32)[labels])


def build_tiny(cfg) -> Model:
    """The model, with its Curvature from the closed forms (the loss has no L2 penalty, so neither has G)."""
    X, Y = tiny_data()
    dims = [D, cfg.model.hidden, K]

    def init(key):
        keys = jax.random.split(key, len(dims) - 1)
        return [(jax.random.normal(k, (m, n), jnp.float32) / m**0.5, jnp.zeros((n,), jnp.float32))
                for k, m, n in zip(keys, dims[:-1], dims[1:])]

    def loss(params, batch):
        return mdc_jax.fcnn_classification_loss(params, *batch, ACTS)

    def batch(key):
        idx = jax.random.randint(key, (cfg.train.batch_size,), 0, N)
        return X[idx], Y[idx]

    def factors(params, batch, key, exact):
        name = "kflr" if exact else "kfac"
        q = fcnn_quantities(params, *batch, ACTS, quantities=(name,), key=key, mc_samples=cfg.optimizer.mc_samples)
        return q["loss"], q["grad"], q[name]

    def ggn_vp(params, batch, tangents, structural=0.0):
        return fcnn_ggn_vp(params, *batch, ACTS, tangents)

    return Model(init=init, loss=loss, batch=batch, batch_axes=(0, 0), primary="train_loss",
                 evaluate=lambda params: {"train_loss": float(loss(params, (X, Y)))}, report=lambda params: {},
                 data={"X_train": X}, curvature=Curvature(factors, ggn_vp))


def build_tiny_with_a_zero_gradient_in_its_factors(cfg) -> Model:
    """The model, its ``Curvature.factors`` returning a zero gradient: a kfac step that moves took its gradient
    from ``jax.grad`` of the loss (``train.grad: autodiff``), not from the factors' closed form."""
    model = build_tiny(cfg)

    def factors(params, batch, key, exact):
        loss, grads, factors = model.curvature.factors(params, batch, key, exact)
        return loss, jax.tree.map(jnp.zeros_like, grads), factors

    return model._replace(curvature=model.curvature._replace(factors=factors))


TINY = ModelSpec("tiny_curvature_mlp", TinyOptions, ("tiny_points",), build=build_tiny, curvature=("kfac", "ggn_cg"))
SPECS = [
    TINY,
    dataclasses.replace(TINY, kind="tiny_first_order_mlp", curvature=()),
    dataclasses.replace(TINY, kind="tiny_curvature_none_mlp", build=lambda cfg: build_tiny(cfg)._replace(curvature=None)),
    dataclasses.replace(TINY, kind="tiny_zero_factor_grad_mlp", build=build_tiny_with_a_zero_gradient_in_its_factors),
    dataclasses.replace(TINY, kind="tiny_kfac_only_mlp", curvature=("kfac",)),
]


@pytest.fixture(scope="module", autouse=True)
def tiny_models():
    """The test models registered (as a user's own are); the plots not drawn (test_experiment.py tests them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "plot_run", lambda run_dir, primary: None)
        for spec in SPECS:
            register_model(spec)
        yield
        for spec in SPECS:
            unregister_model(spec.kind)


BASE = {
    "data": {"dataset": "tiny_points"},
    "model": {"kind": "tiny_curvature_mlp"},
    "train": {"steps": 8, "batch_size": 32, "seed": 0, "checkpoint_every": 4, "eval_every": 4, "log_every": 2},
}
OPTIMIZERS = {  # kfac: a resume at step 4 falls between preconditioner updates (steps 1, 4, 7: counts 0, 3, 6)
    "kfac": {"name": "kfac", "learning_rate": 0.2, "damping": 1.0e-2, "update_every": 3, "momentum": 0.5,
             "clip_norm": 10.0},
    "ggn_cg": {"name": "ggn_cg", "learning_rate": 1.0, "damping": 1.0, "cg_iters": 8},
    "kfac_adaptive": {"name": "kfac", "adaptive": True, "damping": 1.0e-2, "update_every": 3, "clip_norm": 10.0},
}  # kfac_adaptive: λ adapted at steps 5 (count 4) and 10; a resume at step 4 lands just before the first


def write_config(folder: Path, raw: dict) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("change, message", [
    ({"optimizer": {"name": "kfac", "damping": 0}}, r"optimizer\.damping must be > 0, got 0\.0"),
    ({"optimizer": {"name": "ggn_cg", "damping": -1.0}}, r"optimizer\.damping must be > 0, got -1\.0"),
    ({"optimizer": {"name": "kfac", "adaptive": True, "min_damping": 0}}, r"optimizer\.min_damping must be > 0, got 0\.0"),
    ({"optimizer": {"name": "ggn_cg", "damping": 1.0e-3, "min_damping": 1.0e-2}},
     r"optimizer\.damping 0\.001 is below optimizer\.min_damping 0\.01"),
    ({"optimizer": {"name": "ggn_cg", "cg_iters": 0}}, r"optimizer\.cg_iters must be > 0, got 0"),
    ({"optimizer": {"name": "ggn_cg", "cg_tol": -1e-3}}, r"optimizer\.cg_tol must be >= 0, got -0\.001"),
    ({"optimizer": {"name": "kfac", "update_every": 0}}, r"optimizer\.update_every must be > 0, got 0"),
    ({"optimizer": {"name": "kfac", "mc_samples": 0}}, r"optimizer\.mc_samples must be > 0, got 0"),
    ({"optimizer": {"name": "kfac", "ema": 1.0}}, r"optimizer\.ema must be in \[0, 1\), got 1\.0"),
    ({"optimizer": {"name": "kfac", "ema": -0.5}}, r"optimizer\.ema must be in \[0, 1\), got -0\.5"),
    ({"optimizer": {"name": "kfac", "factors": "fisher"}}, r"optimizer\.factors is 'fisher'; expected one of kfac, kflr"),
    ({"optimizer": {"name": "kfac", "inverse": "cholesky"}},
     r"optimizer\.inverse is 'cholesky'; expected one of factored, eigen"),
    ({"optimizer": {"name": "ggn_cg", "adapt_damping": "yes"}}, r"optimizer\.adapt_damping: expected true or false"),
    ({"optimizer": {"name": "ggn_cg", "structural_damping": -0.1}},
     r"optimizer\.structural_damping must be >= 0, got -0\.1"),
    ({"optimizer": {"name": "ggn_cg", "structural_damping": 0.5}},
     r"optimizer\.structural_damping 0\.5: model\.kind 'tiny_curvature_mlp' has no structural damping"),
    ({"optimizer": {"name": "kfac", "adaptive": True}, "model": {"kind": "tiny_kfac_only_mlp"}},
     r"optimizer\.adaptive with optimizer\.name 'kfac': model\.kind 'tiny_kfac_only_mlp' has no GGN-vector product"),
    ({"optimizer": {"name": "kfac", "adaptive": 1}}, r"optimizer\.adaptive: expected true or false"),
    ({"optimizer": {"name": "lbfgs"}}, r"optimizer\.name is 'lbfgs'; expected one of sgd, momentum, adam, adamw, kfac, ggn_cg"),
    ({"optimizer": {"name": "ggn_cg"}, "model": {"kind": "tiny_first_order_mlp"}},
     r"optimizer\.name 'ggn_cg': model\.kind 'tiny_first_order_mlp' cannot serve it \(it has no curvature\)"),
    ({"optimizer": {"name": "kfac"}, "model": {"kind": "logistic"}, "data": {"dataset": "breast_cancer"}},
     r"optimizer\.name 'kfac': model\.kind 'logistic' is fitted by a solver"),
    ({"optimizer": {"name": "kfac"}, "train": {**BASE["train"], "dp": {"clip_norm": 1.0, "noise_multiplier": 1.0}}},
     r"train\.dp with optimizer\.name 'kfac': the curvature would see the private examples unclipped"),
])
def test_second_order_config_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=rf"tiny\.yaml: {message}"):
        load_config(write_config(tmp_path, {**BASE, **change}))


def test_second_order_keys_are_ignored_by_first_order_optimizers_and_default_as_documented(tmp_path):
    cfg = load_config(write_config(tmp_path, {**BASE, "optimizer": {"name": "adam", "structural_damping": 0.5}}))
    o = cfg.optimizer
    assert (o.damping, o.ema, o.update_every, o.factors, o.inverse, o.mc_samples) == (1e-3, 0.95, 10, "kfac", "factored", 1)
    assert (o.cg_iters, o.cg_tol, o.adapt_damping, o.line_search, o.structural_damping) == (50, 1e-4, True, True, 0.5)
    assert o.adaptive is False


def test_a_model_without_the_curvature_its_spec_promises_is_refused_before_the_first_step(tmp_path):
    raw = {**BASE, "model": {"kind": "tiny_curvature_none_mlp"}, "optimizer": OPTIMIZERS["kfac"]}
    with pytest.raises(ConfigError, match=r"optimizer\.name 'kfac': model\.kind 'tiny_curvature_none_mlp' built a "
                                          r"Model without curvature"):
        train(load_config(write_config(tmp_path, raw)), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """``name -> (result, traces, cfg)``: one 8-step run of that optimizer (checkpoints at 4 and 8), trained on
    first use, with the traces of its step."""
    runs = {}

    def run(name):
        if name not in runs:
            folder = tmp_path_factory.mktemp(name)
            cfg = load_config(write_config(folder, {**BASE, "optimizer": OPTIMIZERS[name]}))
            with count_traces() as traces:
                result = train(cfg, out_dir=folder / "run")
            runs[name] = result, dict(traces), cfg
        return runs[name]

    return run


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_second_order_run_lowers_the_loss_and_compiles_its_step_once(finished, name):
    result, traces, cfg = finished(name)
    model = build_tiny(cfg)
    before = model.evaluate(model.init(jax.random.split(jax.random.PRNGKey(cfg.train.seed))[0]))["train_loss"]
    assert result.summary["train_loss"] < 0.9 * before, (before, result.summary["train_loss"])
    assert traces["train_step"] == 1, traces
    assert [s for s, _ in list_checkpoints(result.run_dir / "checkpoints")] == [4, 8]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_record_carries_the_seconds_spent_in_steps_and_ggn_cg_and_adaptive_kfac_log_their_damping(finished, name):
    result, _, _ = finished(name)
    logged = records(result.run_dir)
    assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in logged if "eval" in r] == [4, 8]
    seconds = [r["time_s"] for r in logged]
    assert all(s > 0 for s in seconds) and seconds == sorted(seconds)
    assert result.summary["compile_s"] > 0  # compiled before the first step: no step's seconds include it
    for r in logged:
        if "loss" in r and name == "ggn_cg":
            assert r["damping"] > 0 and isinstance(r["cg_steps"], int) and 0 <= r["cg_steps"] <= 8
            assert {"rho", "step_size"} <= set(r)
        elif "loss" in r and name == "kfac_adaptive":  # ρ: none (NaN) before the first adaptation, at step 5
            assert r["damping"] > 0 and r["alpha"] > 0 and isinstance(r["mu"], float)
            assert (r["rho"] is None) == (r["step"] < 5), r
        elif "loss" in r:
            assert "damping" not in r


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_second_order_run_resumed_from_its_middle_checkpoint_is_bit_identical(finished, name, tmp_path):
    """The optimizer state (K-FAC's running factors and preconditioner, adaptive K-FAC's damping and last update,
    ggn_cg's damping and direction) is in the checkpoint: a run resumed at step 4 ends with the same bytes as the
    uninterrupted one."""
    result, _, _ = finished(name)
    run = Path(shutil.copytree(result.run_dir, tmp_path / "run"))
    for path in [run / "checkpoints" / "ckpt-00000008.npz", run / "final.npz", run / "summary.json"]:
        path.unlink()
    resumed = train(None, resume=run)
    assert resumed.summary["resumed_from_step"] == 4
    with np.load(result.run_dir / "final.npz") as a, np.load(run / "final.npz") as b:
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    before, after = records(result.run_dir), records(run)
    assert [(r["step"], "eval" in r) for r in after] == [(r["step"], "eval" in r) for r in before]
    kept = next(r["time_s"] for r in after if r["step"] == 4 and "eval" in r)
    assert all(r["time_s"] > kept for r in after if r["step"] > 4)  # the resumed run's seconds go on from step 4's


def test_kfac_under_train_grad_autodiff_takes_the_gradient_from_jax_grad_not_from_the_factors(tmp_path):
    raw = {**BASE, "model": {"kind": "tiny_zero_factor_grad_mlp"}, "optimizer": OPTIMIZERS["kfac"],
           "train": {**BASE["train"], "steps": 3, "grad": "autodiff"}}
    cfg = load_config(write_config(tmp_path, raw))
    result = train(cfg, out_dir=tmp_path / "run")
    model = build_tiny(cfg)
    before = model.evaluate(model.init(jax.random.split(jax.random.PRNGKey(cfg.train.seed))[0]))["train_loss"]
    assert result.summary["train_loss"] < before  # with the factors' (zero) gradient it would not move


def test_adaptive_kfac_on_a_curvature_without_ggn_gram_gets_the_gram_matrix_from_ggn_vp_products(tmp_path):
    """The trainer's [v_aᵀ G v_b] of stacked tangents for a Curvature with ggn_vp only: [v_a · ggn_vp(v_b)], equal
    to fcnn_ggn_gram's (the forward differentials alone); a Curvature with a ggn_gram is asked for its own."""
    cfg = load_config(write_config(tmp_path, {**BASE, "optimizer": OPTIMIZERS["kfac_adaptive"]}))
    model = build_tiny(cfg)
    rng = np.random.default_rng(3)  # NumPy draws: no eager XLA op to compile
    normal = lambda shape: jnp.asarray(rng.normal(size=shape).astype(np.float32))
    params = jax.tree.map(lambda s: normal(s.shape), jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    batch = tuple(a[:32] for a in tiny_data())
    V = jax.tree.map(lambda p: normal((2, *p.shape)), params)  # k = 2, as kfac asks
    got, want = jax.jit(lambda p, b, V: (trainer._ggn_gram(model.curvature, p, b)(V), fcnn_ggn_gram(p, *b, ACTS, V)))(
        params, batch, V)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    own = model.curvature._replace(ggn_gram=lambda p, b, V: ("own", p, b, V))
    assert trainer._ggn_gram(own, params, batch)(V)[0] == "own"
