"""The training loop behind `mdc-jax train`: build, initialise or resume, step, evaluate, checkpoint, finish.

:func:`train` reads as its steps: open the run directory (:mod:`.run_dir`), build the model, the
optimizer and the initial state, resume from the newest checkpoint, compile the step once, run the
steps (logging, evaluation, checkpoints), then write ``final.npz`` and ``summary.json``. The optimizers
are optax's, or the second-order ``kfac`` and ``ggn_cg`` of :mod:`mdc_jax.optim`, which the step feeds
with the model's curvature (:func:`_curvature_update`).

Determinism: a step's batch is drawn from ``fold_in(data_key, step)``, so a run resumed from a
checkpoint (parameters, optimizer state, step, key) performs exactly the computations an
uninterrupted run performs, and ends with a bit-identical ``final.npz``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import optim
from .._validation import describe_non_finite
from .checkpoint import CheckpointMismatch, atomic_savez, flatten_named, latest_checkpoint, list_checkpoints, save_checkpoint
from .config import SECOND_ORDER, ConfigError, ExperimentConfig, config_to_dict
from .distributed import SINGLE, check_agreement, config_hash
from .dp import epsilon, make_dp_grad
from .mesh import Shardings, mesh_shardings, mesh_size, replicate
from .models import Model, get_model
from .run_dir import RESUMABLE as RESUMABLE
from .run_dir import MetricsLog, last_good_checkpoint, open_run_dir, plot_run, save_config, write_summary
from .run_dir import check_new_run_dir as check_new_run_dir
from .run_dir import default_run_dir as default_run_dir
from .run_dir import load_run_config as load_run_config
from .run_dir import read_metrics as read_metrics

EXIT_NON_FINITE = 3
GGN_CG_FIGURES = ("damping", "rho", "step_size", "cg_steps")  # ggn_cg's state, shown in the log records
KFAC_ADAPTIVE_FIGURES = ("damping", "rho", "alpha", "mu")  # adaptive kfac's λ, ρ and the last step's α, μ


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped at that step."""


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict
    params: object = None  # the final parameters (also in run_dir/final.npz)


def make_optimizer(cfg: ExperimentConfig) -> optax.GradientTransformation:
    """The config's optimizer, after global-norm clipping if ``optimizer.clip_norm > 0``.

    ``kfac`` and ``ggn_cg`` (:mod:`mdc_jax.optim`) are ``optax.GradientTransformationExtraArgs``: their
    ``update`` takes the model's curvature as keyword arguments (see :func:`_compile_step`)."""
    o, lr = cfg.optimizer, _learning_rate(cfg)
    if o.name == "kfac":
        opt = optim.kfac(lr, damping=o.damping, ema=o.ema, update_every=o.update_every, momentum=o.momentum,
                         inverse=o.inverse, adaptive=o.adaptive, min_damping=o.min_damping)
    elif o.name == "ggn_cg":
        opt = optim.ggn_cg(lr, damping=o.damping, cg_iters=o.cg_iters, cg_tol=o.cg_tol, adapt_damping=o.adapt_damping,
                           line_search=o.line_search, structural_damping=o.structural_damping,
                           min_damping=o.min_damping)
    else:
        opt = {"sgd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=o.momentum),
               "adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr, weight_decay=o.weight_decay)}[o.name]()
    return optax.chain(optax.clip_by_global_norm(o.clip_norm), opt) if o.clip_norm > 0 else opt


def _learning_rate(cfg: ExperimentConfig):
    """``optimizer.learning_rate`` under ``optimizer.schedule``: a float, or an optax schedule of the step."""
    o, steps = cfg.optimizer, cfg.train.steps
    if o.schedule == "constant":
        return o.learning_rate
    if o.schedule == "cosine":
        return optax.cosine_decay_schedule(o.learning_rate, steps)
    if o.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, o.learning_rate, max(o.warmup_steps, 1), steps)
    return optax.exponential_decay(o.learning_rate, steps, o.decay_rate)  # reaches decay_rate·lr at the last step


class TrainState(NamedTuple):
    """What a checkpoint holds: the parameters, the optimizer state, the last step done and the data key."""

    params: Any
    opt_state: Any
    step: int
    data_key: jax.Array


def train(cfg: ExperimentConfig, out_dir: str | Path | None = None, resume: str | Path | None = None,
          tty: bool | None = None, start_over: bool = False, processes=None) -> RunResult:
    """Trains the model a config describes; see the module docstring and the README.

    With ``resume``, ``cfg`` may be ``None``: the run continues from its own ``config.yaml``. When
    the run has checkpoints and none of them can be read, the resume is refused unless
    ``start_over`` (the damaged files are left where they are).

    ``processes``: this process's place in a run across processes (:func:`.distributed.join`); every
    process calls ``train`` alike, the step runs on the mesh of all their devices, and process 0 alone
    evaluates and writes the run directory (see docs/distributed.md); the others return the final
    parameters with an empty ``summary``. ``None``: one process.
    """
    procs = processes or SINGLE
    cfg, run_dir = _open_run_dir(cfg, out_dir, resume, procs)
    log = MetricsLog(run_dir, sys.stdout.isatty() if tty is None else tty, write=procs.writer)
    started = time.perf_counter()
    spec = get_model(cfg.model.kind)
    if spec.fit is not None:
        save_config(cfg, run_dir)
        return _finish_fit(cfg, run_dir, log, spec.fit(cfg), started)

    model = _build_model(spec, cfg)
    shardings = mesh_shardings(cfg, model.batch_axes, procs)
    opt = make_optimizer(cfg)
    state = _initial_state(cfg, model, opt)
    if resume:
        state = _resume(state, cfg, run_dir, log, start_over)
    if procs.writer:
        save_config(cfg, run_dir)  # only now: a refused resume leaves the run's config.yaml as it was
    dp_grad, dp_rate = _dp_gradient(model, cfg, shardings)
    step_fn = _compile_step(cfg, model, opt, shardings, dp_grad, state.data_key)
    params, opt_state = replicate((state.params, state.opt_state), shardings)
    state = state._replace(params=params, opt_state=opt_state)
    resumed_from = state.step if resume else None
    step_fn, compile_s = _compile_ahead(step_fn, state, cfg.train.steps)
    state, metrics, step_times = _run_steps(cfg, model, step_fn, state, run_dir, log, dp_rate, procs)
    return _finish_run(cfg, model, state, metrics, step_times, run_dir, log, started, resumed_from, dp_rate,
                       compile_s, procs)


def _open_run_dir(cfg: ExperimentConfig | None, out_dir, resume, procs=SINGLE) -> tuple[ExperimentConfig, Path]:
    """The config and the run directory, created; a new run gets a new or empty folder, a resume a
    config it may apply and a directory it can write (:func:`.run_dir.open_run_dir`).

    Across processes, process 0 checks and creates the directory (its default name is every process's),
    and all of them then agree (:meth:`.distributed.Processes.agree`): a problem met by any process, or a
    resolved config that differs from process 0's, stops them all with one message naming the process."""
    if not procs.distributed:
        return open_run_dir(cfg, out_dir, resume)
    try:
        found, problem = open_run_dir(cfg, out_dir, resume, procs.writer), None
        mesh_size(found[0], procs)  # here, so that every process stops with the message in the agreement
        if get_model(found[0].model.kind).fit is not None:
            found, problem = None, (f"model.kind {found[0].model.kind!r} is fitted by a solver, in one process: "
                                    f"train it without --num-processes or --distributed")
    except (ConfigError, ValueError, OSError) as err:
        found, problem = None, str(err)
    payload = {"problem": problem} if found is None else {
        "config_hash": config_hash(config_to_dict(found[0])), "run_dir": str(found[1])}
    payloads = procs.agree(payload)
    try:
        check_agreement(payloads)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return found[0], Path(payloads[0]["run_dir"])


def _build_model(spec, cfg: ExperimentConfig) -> Model:
    """The model, with its training data checked finite and, under ``train.dp``, its DP support."""
    model = spec.build(cfg)
    _check_data(cfg, model.data)
    _check_dp(cfg, model)
    _check_curvature(cfg, model)
    return model


def _initial_state(cfg: ExperimentConfig, model: Model, opt) -> TrainState:
    """Step 0: parameters and data key from ``train.seed``."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    params = model.init(init_key)
    return TrainState(params, opt.init(params), 0, data_key)


def _resume(state: TrainState, cfg: ExperimentConfig, run_dir: Path, log: MetricsLog, start_over: bool) -> TrainState:
    """The run's newest readable checkpoint (``state``, step 0, when none was written, or with
    ``start_over`` when none can be read); metrics newer than it are dropped."""
    found = list_checkpoints(run_dir / "checkpoints")
    try:
        restored = latest_checkpoint(run_dir / "checkpoints", state.params, state.opt_state)
    except CheckpointMismatch as err:
        raise ConfigError(f"--resume {run_dir}: {err}") from None
    if restored is not None:
        state = TrainState(*restored)
        if cfg.train.steps < state.step:
            raise ConfigError(f"--resume {run_dir}: train.steps is {cfg.train.steps}, but the run's newest "
                              f"checkpoint is at step {state.step}; train.steps may only grow")
        log.say(f"resumed {run_dir} from step {state.step}")
    elif found and not start_over:
        raise ConfigError(f"--resume {run_dir}: none of its {len(found)} checkpoint(s) can be read (see the "
                          f"warnings above); nothing was changed. To train this run again from step 0, "
                          f"pass --start-over")
    else:
        log.say(f"resuming {run_dir} from step 0: " + ("no checkpoint can be read (--start-over)" if found
                                                       else "no checkpoint was written yet"))
    log.truncate_after(state.step)
    return state


def _dp_gradient(model: Model, cfg: ExperimentConfig, shardings: Shardings | None):
    """``(dp_grad, sampling rate q)`` under ``train.dp`` (see :mod:`.dp`; over the mesh's devices when there
    are several), else ``(None, None)``."""
    if cfg.train.dp is None:
        return None, None
    dp_grad, q, _capacity = make_dp_grad(model, cfg, None if shardings is None else shardings.mesh)
    return dp_grad, q


def _compile_step(cfg: ExperimentConfig, model: Model, opt, shardings, dp_grad, data_key):
    """``train_step(params, opt_state, step) -> (params, opt_state, loss)``, jitted once per run.
    Step ``t``'s batch (or, under ``train.dp``, its Poisson draw and noise) comes from
    ``fold_in(data_key, t)``: a resumed run repeats exactly the computations of an uninterrupted one."""
    curvature_update = _curvature_update(cfg, model, opt)

    def train_step(params, opt_state, step):
        key = jax.random.fold_in(data_key, step)
        if dp_grad is not None:  # Poisson-sampled batch, clipped per example, noised (experiment/dp.py)
            loss, grads = dp_grad(params, key)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss
        batch = model.batch(key)
        if shardings is not None:
            batch = jax.lax.with_sharding_constraint(batch, shardings.batch)  # each device draws its own rows
        if curvature_update is not None:  # kfac, ggn_cg: the sampled factors' labels from a key of their own
            loss, updates, opt_state = curvature_update(params, opt_state, batch, jax.random.fold_in(key, 1))
        else:
            loss, grads = jax.value_and_grad(model.loss)(params, batch)
            updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if shardings is None:
        return jax.jit(train_step)
    return jax.jit(train_step, out_shardings=(shardings.replicated,) * 3)


def _curvature_update(cfg: ExperimentConfig, model: Model, opt):
    """``(params, opt_state, batch, key) -> (loss, updates, opt_state)`` of ``kfac`` or ``ggn_cg``, fed by the
    model's :class:`~.models.Curvature` on the step's batch; ``None`` for the first-order optimizers.

    kfac: the loss, its gradient and the Kronecker factors from one forward (``factors: kflr`` their exact
    ``B``, ``kfac`` the sampled one); ``train.grad: autodiff`` takes the loss and gradient from ``jax.grad``
    instead; ``adaptive: true`` adds the GGN's Gram matrix of stacked tangents (:func:`_ggn_gram`) and the loss
    on the same batch, for the quadratic model and the reduction ratio. ggn_cg: the gradient as for the
    first-order optimizers, and the GGN-vector product and the loss at other parameters on the same batch, for
    CG and the reduction ratio."""
    o, curvature = cfg.optimizer, model.curvature
    if o.name == "kfac":
        exact, autodiff, adaptive = o.factors == "kflr", cfg.train.grad == "autodiff", o.adaptive

        def kfac_update(params, opt_state, batch, key):
            loss, grads, factors = curvature.factors(params, batch, key, exact)
            if autodiff:
                loss, grads = jax.value_and_grad(model.loss)(params, batch)
            quadratic = {}
            if adaptive:
                quadratic = dict(ggn_gram=_ggn_gram(curvature, params, batch), loss=lambda p: model.loss(p, batch),
                                 value=loss)
            updates, opt_state = opt.update(grads, opt_state, params, factors=factors, **quadratic)
            return loss, updates, opt_state

        return kfac_update
    if o.name == "ggn_cg":

        def ggn_cg_update(params, opt_state, batch, key):
            loss, grads = jax.value_and_grad(model.loss)(params, batch)
            updates, opt_state = opt.update(grads, opt_state, params, ggn_vp=functools.partial(
                curvature.ggn_vp, params, batch), loss=lambda p: model.loss(p, batch), value=loss)
            return loss, updates, opt_state

        return ggn_cg_update
    return None


def _ggn_gram(curvature, params, batch):
    """``V -> [v_aᵀ G v_b]`` for ``k`` tangents stacked on a leading axis, on ``batch`` at ``params``: the model's own
    ``Curvature.ggn_gram`` (the forward differentials alone), or, for a Curvature without one, from ``k``
    products of its ``ggn_vp`` (``v_a · G v_b``, a backward each)."""
    if curvature.ggn_gram is not None:
        return functools.partial(curvature.ggn_gram, params, batch)
    ggn_vp = functools.partial(curvature.ggn_vp, params, batch)

    def gram(V):
        vs = [jax.tree.map(lambda x, a=a: x[a], V) for a in range(jax.tree.leaves(V)[0].shape[0])]
        Gvs = [ggn_vp(v) for v in vs]
        return jnp.stack([jnp.stack([optax.tree_utils.tree_vdot(v, Gv) for Gv in Gvs]) for v in vs])

    return gram


def _optimizer_figures(cfg: ExperimentConfig, opt_state) -> dict:
    """What a log record shows of the optimizer's state: ggn_cg's damping λ, reduction ratio ρ, step size α and
    CG iterations of the last step; adaptive kfac's λ, ρ of the last adaptation, and α, μ of the last step
    (read by field name, so a clipping ``optax.chain`` around it is no matter)."""
    o = cfg.optimizer
    names = GGN_CG_FIGURES if o.name == "ggn_cg" else KFAC_ADAPTIVE_FIGURES if o.name == "kfac" and o.adaptive else ()
    found = {name: optax.tree_utils.tree_get(opt_state, name) for name in names}
    figures = {name: np.asarray(value).item() for name, value in found.items() if value is not None and np.ndim(value) == 0}
    return {name: value if math.isfinite(value) else None for name, value in figures.items()}  # JSON has no NaN


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def _run_steps(cfg: ExperimentConfig, model: Model, step_fn, state: TrainState, run_dir: Path, log: MetricsLog,
               dp_rate: float | None, procs=SINGLE) -> tuple[TrainState, dict | None, list[float]]:
    """Steps ``state.step + 1 .. train.steps``, each loss checked finite, logged, evaluated and
    checkpointed on the config's schedule. Returns the last state, the last evaluation (None if no
    step ran) and each step's seconds.

    Every record carries ``time_s``, the seconds spent in steps so far (compilation, evaluation and
    checkpoints excluded; a resumed run goes on from its last record's), to plot against wall time.

    A checkpoint is written only once its parameters are known to give a finite loss: those of step
    s are saved after step s + 1 has computed their loss (the last step's once its parameters are
    checked finite), so the newest checkpoint is never the one that went non-finite.

    Across processes every process runs this loop alike (each step waits at most ``--timeout`` for the
    others); process 0 alone writes records and checkpoints."""
    t, folder = cfg.train, run_dir / "checkpoints"
    step_times, losses, window_start, metrics, pending = [], [], time.perf_counter(), None, None
    spent = _seconds_so_far(log)
    for step in range(state.step + 1, t.steps + 1):
        t0 = time.perf_counter()
        with procs.waiting(f"step {step}"):
            params, opt_state, loss = step_fn(state.params, state.opt_state, jnp.asarray(step, jnp.int32))
            loss = float(loss)
        step_times.append(time.perf_counter() - t0)
        spent += step_times[-1]
        if not math.isfinite(loss):
            log.record(step=step, loss=loss, time_s=spent, error="non-finite loss")
            _stop(log, run_dir, f"the loss is {loss} at step {step}", f"non-finite loss ({loss}) at step {step}")
        if pending is not None and procs.writer:
            save_checkpoint(folder, *pending)
        pending = None
        state = state._replace(params=params, opt_state=opt_state, step=step)
        losses.append(loss)
        if _due(step, t.log_every, t.steps):
            rate = len(losses) / (time.perf_counter() - window_start)
            log.record(step=step, loss=float(np.mean(losses)), steps_per_sec=rate, time_s=spent,
                       **_optimizer_figures(cfg, state.opt_state))
            log.say(f"step {step}/{t.steps}  loss {np.mean(losses):.4f}  {rate:.1f} steps/s", progress=True)
            losses, window_start = [], time.perf_counter()
        if _due(step, t.eval_every, t.steps) and procs.writer:  # the others would only discard them
            metrics = _evaluate(cfg, model, procs.local(state.params), state.step, dp_rate)
            log.record(step=step, time_s=spent, eval=metrics)
            log.say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % t.checkpoint_every == 0:
            pending = (step, state.params, state.opt_state, state.data_key)
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(procs.local(state.params))):  # no next step checks them
        log.record(step=t.steps, time_s=spent, error="non-finite parameters")
        _stop(log, run_dir, f"the parameters are not finite after step {t.steps}",
              f"non-finite parameters after step {t.steps}, the last step")
    if pending is not None and procs.writer:
        save_checkpoint(folder, *pending)
    return state, metrics, step_times


def _seconds_so_far(log: MetricsLog) -> float:
    """The ``time_s`` of the newest record a resumed run kept (0 for a new run): its steps' seconds so far."""
    if not log.path.exists():
        return 0.0
    seconds = [r["time_s"] for _, r in read_metrics(log.path) if r is not None and isinstance(r.get("time_s"), float)]
    return seconds[-1] if seconds else 0.0


def _compile_ahead(step_fn, state: TrainState, steps: int):
    """``(compiled step, seconds)``: the step compiled before the first one runs, so that no step's seconds
    include compilation, and the steps call the compiled executable itself (calling the ``jit`` after
    ``lower().compile()`` would lower it again). ``(step_fn, None)`` when no step is left to run."""
    if state.step >= steps:
        return step_fn, None
    t0 = time.perf_counter()
    compiled = step_fn.lower(state.params, state.opt_state, jnp.asarray(state.step + 1, jnp.int32)).compile()
    return compiled, time.perf_counter() - t0


def _stop(log: MetricsLog, run_dir: Path, what: str, reason: str):
    """Stops a run that went non-finite, saying where it can be resumed from."""
    where = last_good_checkpoint(run_dir)
    log.say(f"error: {what}; stopping. {where}.")
    raise NonFiniteLoss(f"{reason}; {where}")


def _evaluate(cfg: ExperimentConfig, model: Model, params, step: int, dp_rate: float | None) -> dict:
    """The held-out metrics, and under ``train.dp`` the privacy spent so far: ε at δ after ``step`` steps."""
    metrics = model.evaluate(params)
    if cfg.train.dp is not None:
        metrics["epsilon"] = _epsilon(cfg, step, dp_rate)
    return metrics


def _epsilon(cfg: ExperimentConfig, steps: int, dp_rate: float) -> float:
    dp = cfg.train.dp
    return epsilon(steps, dp_rate, dp.noise_multiplier, dp.delta, dp.accountant)


def _finish_run(cfg, model: Model, state: TrainState, metrics: dict | None, step_times: list[float], run_dir: Path,
                log: MetricsLog, started: float, resumed_from: int | None, dp_rate: float | None,
                compile_s: float | None, procs=SINGLE) -> RunResult:
    """``final.npz``, ``summary.json`` and the plots of a finished run (by process 0 alone, across processes)."""
    params = procs.local(state.params)
    if not procs.writer:  # process 0 evaluates, reports and writes; the others have the same parameters
        return RunResult(run_dir, {}, params)
    final_metrics = metrics if metrics is not None else model.evaluate(params)  # the loop evaluated its last step
    atomic_savez(run_dir / "final.npz", flatten_named(params, ""))
    dp = cfg.train.dp
    if dp is not None and "epsilon" not in final_metrics:  # a resume with no step left to run
        final_metrics["epsilon"] = _epsilon(cfg, cfg.train.steps, dp_rate)
    privacy = {} if dp is None else {"dp": {**dataclasses.asdict(dp), "sampling_rate": dp_rate}}
    summary = {"config": cfg.name, "model": cfg.model.kind, "grad": cfg.train.grad, "steps": cfg.train.steps,
               "resumed_from_step": resumed_from, **final_metrics, **privacy, **model.report(params),
               "primary_metric": model.primary, "wall_time_s": time.perf_counter() - started,
               "compile_s": compile_s,
               "time_per_step_ms": 1e3 * statistics.median(step_times[1:] or step_times) if step_times else None,
               **({"processes": procs.num_processes} if procs.distributed else {})}
    write_summary(run_dir, summary)
    try:
        plot_run(run_dir, model.primary)
    except Exception as err:  # the plots are an optional artefact: the run itself succeeded
        first = (str(err).strip().splitlines() or [""])[0][:200]
        print(f"warning: could not draw the plots in {run_dir}: {type(err).__name__}: {first}", file=sys.stderr)
    log.say(f"done: {model.primary} {final_metrics[model.primary]:.4f}; run directory {run_dir}")
    return RunResult(run_dir, summary, params)


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
                          f"({model.examples} examples); with train.dp it is the expected batch size q·N of Poisson "
                          f"sampling (each example drawn with probability q = batch_size / N, without "
                          f"replacement), so at most {model.examples}")


def _check_curvature(cfg: ExperimentConfig, model: Model) -> None:
    """``kfac`` and ``ggn_cg`` need the model's :class:`~.models.Curvature` (its ModelSpec promised it)."""
    if cfg.optimizer.name in SECOND_ORDER and model.curvature is None:
        raise ConfigError(f"optimizer.name {cfg.optimizer.name!r}: model.kind {cfg.model.kind!r} built a Model "
                          f"without curvature (Model.curvature is None), though its ModelSpec.curvature lists "
                          f"{cfg.optimizer.name!r}; expected a Curvature(factors, ggn_vp[, ggn_gram])")


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
    write_summary(run_dir, summary)
    log.say("done: " + ", ".join(f"{k} {v:.4f}" for k, v in fit.metrics.items()) + f"; run directory {run_dir}")
    return RunResult(run_dir, summary, fit.params)
