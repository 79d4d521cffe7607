"""`mdc-jax demo`: the main job, on bundled data, through the same trainer as `mdc-jax train`.

Steps: (1) check the model's closed-form gradient against ``jax.grad`` of its reference on a real
training batch, in float64; (2) train the config with :func:`mdc_jax.experiment.trainer.train`;
(3) report its held-out metric; (4) time one gradient evaluation, closed form vs autodiff,
interleaved (ratio of medians). The default config is the shipped
``configs/fcnn_classification_digits.yaml``; any gradient-trained config works.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from .bench.timing import interleaved_medians
from .experiment.config import ConfigError, ExperimentConfig, load_config
from .experiment.models import GRADS, find_config, get_model
from .experiment.trainer import train
from .testing import DEFAULT_RTOL, rel_err

DEMO_CONFIG = "fcnn_classification_digits"


def _with_grad(cfg: ExperimentConfig, grad: str) -> ExperimentConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad=grad))


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def build_both(cfg: ExperimentConfig) -> dict:
    """The config's model built twice: through the closed-form rules and through autodiff."""
    spec = get_model(cfg.model.kind)
    if spec.build is None:
        raise ConfigError(f"{cfg.name}: model.kind {spec.kind!r} is fitted by a solver; the demo trains by "
                          f"gradient steps")
    return {grad: spec.build(_with_grad(cfg, grad)) for grad in GRADS}


def gradient_check(models: dict, seed: int = 0) -> float:
    """Max relative error, over every parameter, between the model's gradient through the
    closed-form rules and through ``jax.grad`` of the reference, on one training batch in float64."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("gradient_check runs in float64: enable jax_enable_x64 at process start "
                           "(the `mdc-jax demo` command does).")
    key_init, key_batch = jax.random.split(jax.random.PRNGKey(seed))
    params = _cast(models["closed"].init(key_init), jnp.float64)
    batch = _cast(models["closed"].batch(key_batch), jnp.float64)
    return rel_err(*(jax.jit(jax.grad(models[g].loss))(params, batch) for g in GRADS))


def time_gradients(models: dict, params, rounds: int = 200, seed: int = 0) -> dict[str, float]:
    """Median milliseconds of one jitted gradient of the model's loss, closed form and autodiff,
    interleaved, on one training batch."""
    batch = models["closed"].batch(jax.random.PRNGKey(seed))
    grads = {g: jax.jit(jax.grad(models[g].loss)) for g in GRADS}
    return interleaved_medians({g: (lambda f=f: f(params, batch)) for g, f in grads.items()}, rounds=rounds)


def run_demo(config: str | Path = DEMO_CONFIG, overrides: list[str] = (), out_dir: str | Path | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Runs the demo on ``config`` and returns its figures."""
    cfg = load_config(find_config(config), list(overrides))
    models = build_both(cfg)
    err = gradient_check(models, cfg.train.seed)
    ok = err <= DEFAULT_RTOL["float64"]
    log(f"gradient check (float64, a training batch of {cfg.train.batch_size}): max relative error "
        f"closed vs jax.grad = {err:.2e} [{'ok' if ok else 'FAIL'}]")
    result = train(cfg, out_dir=out_dir)
    s = result.summary
    log(f"{s['primary_metric']}: {s[s['primary_metric']]:.4f}  ({s['steps']} steps in {s['wall_time_s']:.1f} s)")
    ms = time_gradients(models, result.params, seed=cfg.train.seed)
    log(f"time per gradient (batch {cfg.train.batch_size}, median of interleaved runs): closed "
        f"{1e3 * ms['closed']:.1f} µs, autodiff {1e3 * ms['autodiff']:.1f} µs, ratio {ms['closed'] / ms['autodiff']:.2f}")
    return {"grad_check_max_rel_err": err, "grad_check_passed": ok, "summary": s, "run_dir": str(result.run_dir),
            "closed_ms": ms["closed"], "autodiff_ms": ms["autodiff"]}

