"""The training loop behind `mdc-jax train`: run directory, logging, evaluation, checkpoints, resume.

Determinism: a step's batch is drawn from ``fold_in(data_key, step)``, so a run resumed from a
checkpoint (parameters, optimizer state, step, key) performs exactly the computations an
uninterrupted run performs, and ends with a bit-identical ``final.npz``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml

from .._validation import describe_non_finite
from .checkpoint import (
    CheckpointMismatch,
    atomic_savez,
    atomic_write_text,
    checkpoint_names,
    flatten_named,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from .config import (
    ConfigError,
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    parse_override,
    read_yaml,
    safe_name,
)
from .dp import epsilon, make_dp_grad
from .models import get_model

EXIT_NON_FINITE = 3


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped at that step."""


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict
    params: object = None  # the final parameters (also in run_dir/final.npz)


def make_optimizer(cfg: ExperimentConfig) -> optax.GradientTransformation:
    o, steps = cfg.optimizer, cfg.train.steps
    if o.schedule == "constant":
        lr = o.learning_rate
    elif o.schedule == "cosine":
        lr = optax.cosine_decay_schedule(o.learning_rate, steps)
    elif o.schedule == "warmup_cosine":
        lr = optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, max(o.warmup_steps, 1), steps)
    else:  # exponential: reaches decay_rate·lr at the last step
        lr = optax.exponential_decay(o.learning_rate, steps, o.decay_rate)
    opt = {"sgd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=o.momentum),
           "adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr, weight_decay=o.weight_decay)}[o.name]()
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), opt) if o.clip_norm > 0 else opt


def _mesh_shardings(cfg: ExperimentConfig, batch_axes):
    """(replicated sharding, batch shardings) over ``train.devices`` devices, or None for one device."""
    available = jax.devices()
    n = cfg.train.devices or len(available)
    if n > len(available):
        raise ConfigError(f"train.devices is {n}, but only {len(available)} device(s) are visible")
    if n == 1:
        return None
    if cfg.train.batch_size % n:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be divisible by train.devices {n}")
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(available[:n]), ("batch",))

    def spec(axis):
        return NamedSharding(mesh, PartitionSpec(*([None] * axis + ["batch"])))

    return NamedSharding(mesh, PartitionSpec()), jax.tree.map(spec, batch_axes)


class _Log:
    """metrics.jsonl writer and console output (a progress line on a terminal, log lines otherwise)."""

    def __init__(self, run_dir: Path, tty: bool):
        self.path, self.tty = run_dir / "metrics.jsonl", tty

    def truncate_after(self, step: int) -> None:
        """On resume: drop records newer than the checkpoint, they will be produced again (a line
        that is not a record is kept as it is)."""
        if not self.path.exists():
            return
        kept = [line for line, record in read_metrics(self.path) if record is None or record["step"] <= step]
        atomic_write_text(self.path, b"".join(line + b"\n" for line in kept))

    def record(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def say(self, text: str, progress: bool = False) -> None:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # a path that is not UTF-8
        if progress and self.tty:
            print("\r" + text.ljust(100), end="", flush=True)
        elif not progress or not self.tty:
            if self.tty:
                print("\r" + " " * 100 + "\r", end="")
            print(text, flush=True)


def read_metrics(path: Path) -> list[tuple[bytes, dict | None]]:
    """The lines of a ``metrics.jsonl`` with their records; a line that is not a JSON object with an
    integer ``step`` (a hand edit, a half-written line) gets ``None`` and a warning naming it."""
    lines, bad = [], []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            record = None
        if not (isinstance(record, dict) and type(record.get("step")) is int):
            record = None
            bad.append(number)
        lines.append((line, record))
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        print(f"warning: {path}: skipping line(s) {', '.join(map(str, bad[:5]))}{more}: not a JSON record with "
              f"an integer \"step\"", file=sys.stderr, flush=True)
    return lines


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """``runs/<name>-<timestamp>``, with a suffix ``-2``, ``-3``, ... if a run started the same second."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / f"{cfg.name}-{stamp}", 2
    while path.exists():
        path, n = Path(root) / f"{cfg.name}-{stamp}-{n}", n + 1
    return path


def check_new_run_dir(path: str | Path, flag: str = "--out", hint: str = "") -> None:
    """Refuses an output directory that exists and is not an empty folder: nothing saved is overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a directory; the run directory must be a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{flag} {path}: exists and is not empty; " + (hint or f"give a new or empty directory, "
                          f"or --resume {path} to continue the run there"))


def _check_resumable(run_dir: Path) -> None:
    """Refuses a resume that could not write its files, before anything in the run directory changes."""
    folder = run_dir / "checkpoints"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--resume {run_dir}: {folder} is not a directory; the run's checkpoints are written there")
    for path in [*checkpoint_names(folder), *(run_dir / n for n in ("metrics.jsonl", "summary.json", "final.npz"))]:
        if path.exists() and not path.is_file():
            raise ConfigError(f"--resume {run_dir}: {path} is not a file, and the resume writes there; move it away "
                              f"and resume again")


# Keys of the single model section before models declared their own options, at their defaults:
# a run directory written then holds them all; they are dropped where the model does not use them.
_LEGACY_MODEL_DEFAULTS = {"hidden": [], "activation": "tanh", "l2": 0.0, "hidden_size": 128, "seq_len": 64,
                          "fit_intercept": True}


def load_run_config(run_dir: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """The resolved ``config.yaml`` a run directory holds, with ``KEY=VALUE`` overrides applied."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    raw = read_yaml(path)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        raw["name"] = safe_name(raw["name"])  # a run named after its config file before names were checked
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        try:
            fields = {f.name for f in dataclasses.fields(get_model(raw["model"].get("kind")).options)}
        except ValueError:
            fields = None  # the loader reports the unknown kind
        if fields is not None:
            raw["model"] = {k: v for k, v in raw["model"].items()
                            if k in fields or _LEGACY_MODEL_DEFAULTS.get(k, object()) != v}
    return config_from_dict(raw, str(path), [parse_override(o) for o in overrides])


# What a resume may change: how long and how often, and the optimizer's settings (a lower learning
# rate after a divergence, another schedule or clipping). The model, the data, the seed and the
# gradient stay those of the run.
RESUMABLE = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.devices",
             "optimizer.")


def _check_resume_config(cfg: ExperimentConfig, run_dir: Path) -> ExperimentConfig:
    """``cfg`` if it differs from the run's saved config only where a resume may change it."""
    saved = load_run_config(run_dir)
    a, b = config_to_dict(saved), config_to_dict(cfg)
    diff = [f"{s}.{k}" for s in sorted(set(a) | set(b)) if isinstance(a.get(s), dict) or isinstance(b.get(s), dict)
            for k in sorted(set(a.get(s) or {}) | set(b.get(s) or {}))
            if (a.get(s) or {}).get(k, "<unset>") != (b.get(s) or {}).get(k, "<unset>")]
    refused = [key for key in diff if not key.startswith(RESUMABLE)]
    if refused:
        raise ConfigError(f"--resume {run_dir}: the config differs from the run's saved config.yaml at "
                          f"{', '.join(refused)}; a resume may change only train.steps, the logging, evaluation "
                          f"and checkpoint intervals, and optimizer settings")
    cfg.name = saved.name
    return cfg


def train(cfg: ExperimentConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
          tty: bool | None = None, start_over: bool = False) -> RunResult:
    """Trains the model a config describes; see the module docstring and the README.

    With ``resume``, ``cfg`` may be ``None``: the run continues from its own ``config.yaml``. When
    the run has checkpoints and none of them can be read, the resume is refused unless
    ``start_over`` (the damaged files are left where they are).
    """
    if cfg is None:
        if not resume:
            raise ConfigError("train: give a config, or resume=RUN_DIR to continue a run from its own config.yaml")
        cfg = load_run_config(resume)
    if resume and out_dir:
        raise ConfigError(f"--out and --resume cannot be combined: the run directory is RUN_DIR ({resume})")
    spec = get_model(cfg.model.kind)
    run_dir = Path(resume) if resume else Path(out_dir) if out_dir else default_run_dir(cfg)
    if resume:
        cfg = _check_resume_config(cfg, run_dir)
        _check_resumable(run_dir)
    else:
        check_new_run_dir(run_dir)  # a new run never writes over files: --out is new or empty
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(run_dir, sys.stdout.isatty() if tty is None else tty)
    started = time.perf_counter()

    if spec.fit is not None:
        _save_config(cfg, run_dir)
        return _finish_fit(cfg, run_dir, log, spec.fit(cfg), started)

    model = spec.build(cfg)
    _check_data(cfg, model.data)
    _check_dp(cfg, model)
    shardings = _mesh_shardings(cfg, model.batch_axes)
    opt = make_optimizer(cfg)
    key = jax.random.PRNGKey(cfg.train.seed)
    init_key, data_key = jax.random.split(key)
    params = model.init(init_key)
    opt_state = opt.init(params)
    start = 0
    if resume:
        found = list_checkpoints(run_dir / "checkpoints")
        try:
            restored = latest_checkpoint(run_dir / "checkpoints", params, opt_state)
        except CheckpointMismatch as err:
            raise ConfigError(f"--resume {run_dir}: {err}") from None
        if restored is not None:
            params, opt_state, start, data_key = restored
            if cfg.train.steps < start:
                raise ConfigError(f"--resume {run_dir}: train.steps is {cfg.train.steps}, but the run's newest "
                                  f"checkpoint is at step {start}; train.steps may only grow")
            log.say(f"resumed {run_dir} from step {start}")
        elif found and not start_over:
            raise ConfigError(f"--resume {run_dir}: none of its {len(found)} checkpoint(s) can be read (see the "
                              f"warnings above); nothing was changed. To train this run again from step 0, "
                              f"pass --start-over")
        else:
            log.say(f"resuming {run_dir} from step 0: " + ("no checkpoint can be read (--start-over)" if found
                                                           else "no checkpoint was written yet"))
        log.truncate_after(start)
    _save_config(cfg, run_dir)  # only now: a refused resume leaves the run's config.yaml as it was

    if cfg.train.dp is not None:
        dp_grad, dp_rate, _ = make_dp_grad(model, cfg)

    def step_fn(params, opt_state, step):
        if cfg.train.dp is not None:  # Poisson-sampled batch, clipped per example, noised (experiment/dp.py)
            loss, grads = dp_grad(params, jax.random.fold_in(data_key, step))
        else:
            batch = model.batch(jax.random.fold_in(data_key, step))
            if shardings is not None:
                batch = jax.lax.with_sharding_constraint(batch, shardings[1])
            loss, grads = jax.value_and_grad(model.loss)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if shardings is not None:
        params, opt_state = jax.device_put((params, opt_state), shardings[0])
        step_fn = jax.jit(step_fn, out_shardings=(shardings[0], shardings[0], shardings[0]))
    else:
        step_fn = jax.jit(step_fn)

    # A checkpoint is written only once its parameters are known to give a finite loss: those of
    # step s are saved after step s + 1 has computed their loss (the last step's once its parameters
    # are checked finite), so the newest checkpoint is never the one that went non-finite.
    step_times, window_start, losses, metrics, pending = [], time.perf_counter(), [], None, None
    for step in range(start + 1, cfg.train.steps + 1):
        t0 = time.perf_counter()
        new_params, new_opt_state, loss = step_fn(params, opt_state, jnp.asarray(step, jnp.int32))
        loss = float(loss)
        step_times.append(time.perf_counter() - t0)
        if not math.isfinite(loss):
            log.record(step=step, loss=loss, error="non-finite loss")
            where = _last_good_checkpoint(run_dir)
            log.say(f"error: the loss is {loss} at step {step}; stopping. {where}.")
            raise NonFiniteLoss(f"non-finite loss ({loss}) at step {step}; {where}")
        if pending is not None:
            save_checkpoint(run_dir / "checkpoints", *pending, data_key)
            pending = None
        params, opt_state = new_params, new_opt_state
        losses.append(loss)
        if step % cfg.train.log_every == 0 or step == cfg.train.steps:
            rate = len(losses) / (time.perf_counter() - window_start)
            log.record(step=step, loss=float(np.mean(losses)), steps_per_sec=rate)
            log.say(f"step {step}/{cfg.train.steps}  loss {np.mean(losses):.4f}  {rate:.1f} steps/s", progress=True)
            losses, window_start = [], time.perf_counter()
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            metrics = model.evaluate(params)
            if cfg.train.dp is not None:  # the privacy spent so far: ε at δ after `step` steps
                metrics["epsilon"] = epsilon(step, dp_rate, cfg.train.dp.noise_multiplier, cfg.train.dp.delta,
                                             cfg.train.dp.accountant)
            log.record(step=step, eval=metrics)
            log.say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % cfg.train.checkpoint_every == 0:
            pending = (step, params, opt_state)
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params)):  # no next step checks them
        log.record(step=cfg.train.steps, error="non-finite parameters")
        where = _last_good_checkpoint(run_dir)
        log.say(f"error: the parameters are not finite after step {cfg.train.steps}; stopping. {where}.")
        raise NonFiniteLoss(f"non-finite parameters after step {cfg.train.steps}, the last step; {where}")
    if pending is not None:
        save_checkpoint(run_dir / "checkpoints", *pending, data_key)

    final_metrics = metrics if metrics is not None else model.evaluate(params)  # the loop evaluates its last step
    atomic_savez(run_dir / "final.npz", flatten_named(params, ""))
    dp = cfg.train.dp
    if dp is not None and "epsilon" not in final_metrics:  # a resume with no step left to run
        final_metrics["epsilon"] = epsilon(cfg.train.steps, dp_rate, dp.noise_multiplier, dp.delta, dp.accountant)
    privacy = {} if dp is None else {"dp": {**dataclasses.asdict(dp), "sampling_rate": dp_rate}}
    summary = {"config": cfg.name, "model": cfg.model.kind, "grad": cfg.train.grad, "steps": cfg.train.steps,
               "resumed_from_step": start if resume else None, **final_metrics, **privacy, **model.report(params),
               "primary_metric": model.primary, "wall_time_s": time.perf_counter() - started,
               "time_per_step_ms": 1e3 * statistics.median(step_times[1:] or step_times) if step_times else None}
    _write_summary(run_dir, summary)
    try:
        _plot(run_dir, model.primary)
    except Exception as err:  # the plots are an optional artefact: the run itself succeeded
        first = (str(err).strip().splitlines() or [""])[0][:200]
        print(f"warning: could not draw the plots in {run_dir}: {type(err).__name__}: {first}", file=sys.stderr)
    log.say(f"done: {model.primary} {final_metrics[model.primary]:.4f}; run directory {run_dir}")
    return RunResult(run_dir, summary, params)


def _last_good_checkpoint(run_dir: Path) -> str:
    kept = list_checkpoints(run_dir / "checkpoints")
    return f"the last good checkpoint is {kept[-1][1]}" if kept else "no checkpoint was written yet"


def _check_dp(cfg: ExperimentConfig, model) -> None:
    """``train.dp`` needs a model that can gather examples by index (and clip them in closed form)."""
    if cfg.train.dp is None:
        return
    missing = [f for f in ("examples", "gather") if getattr(model, f) is None]
    if cfg.train.grad == "closed" and model.clipped_grad is None:
        missing.append("clipped_grad")
    if missing:
        hint = " (or train.grad: autodiff, which clips jax.vmap(jax.grad) of its loss)" if missing == ["clipped_grad"] else ""
        raise ConfigError(f"train.dp: model.kind {cfg.model.kind!r} does not support DP-SGD: its Model has no "
                          f"{', '.join(missing)}{hint}")
    if cfg.train.batch_size > model.examples:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is larger than the training set "
                          f"({model.examples} examples); with train.dp it is the expected Poisson batch size")


def _check_data(cfg: ExperimentConfig, data) -> None:
    """Refuses non-finite training data before the first step (it would give a NaN loss silently)."""
    for name, array in (data or {}).items():
        problem = describe_non_finite(name, np.asarray(array))
        if problem:
            raise ConfigError(f"data.dataset {cfg.data.dataset!r}: {problem}; expected finite values. "
                              f"Drop or impute those entries before training")


def _finish_fit(cfg, run_dir, log, fit, started) -> RunResult:
    log.record(step=int(fit.info.get("iterations", 0)), eval=fit.metrics)
    atomic_savez(run_dir / "final.npz", flatten_named(fit.params, ""))
    summary = {"config": cfg.name, "model": cfg.model.kind, "grad": cfg.train.grad, **fit.metrics, **fit.info,
               "primary_metric": fit.primary, "wall_time_s": time.perf_counter() - started}
    _write_summary(run_dir, summary)
    log.say("done: " + ", ".join(f"{k} {v:.4f}" for k, v in fit.metrics.items()) + f"; run directory {run_dir}")
    return RunResult(run_dir, summary, fit.params)


def _save_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def _write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")


def _plot(run_dir: Path, primary: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for _, r in read_metrics(run_dir / "metrics.jsonl") if r is not None]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "error" not in r]
    evals = [(r["step"], r["eval"][primary]) for r in records if isinstance(r.get("eval"), dict) and primary in r["eval"]]
    title = os.fsencode(run_dir.name).decode("utf-8", "replace")  # a name that is not UTF-8 has surrogates
    for name, points, ylabel in [("train_loss.png", train, "training loss"), ("eval.png", evals, primary)]:
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}: {ylabel}")
            ax.grid(alpha=0.3)
            with warnings.catch_warnings():  # a run name in a script the font lacks: boxes, not warnings
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")
                fig.tight_layout()
                fig.savefig(run_dir / name, dpi=100)
        finally:
            plt.close(fig)
