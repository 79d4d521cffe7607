"""The deep autoencoder of issue 22 trained by ``mdc_jax.optim.kfac`` and by kfac-jax 0.0.8 (the peer).

Both sides train the model ``mlp_autoencoder`` of a config (by default ``autoencoder_digits_kfac``:
64-256-128-32-128-256-64, logistic hidden units, a linear code layer and a linear output, on scikit-learn's
digits, pixels / 16, the training split) from the same initial parameters (``model.init``), on the same
batches (``model.batch(fold_in(data_key, t))``, as ``mdc-jax train`` draws them), in float32, for the same
number of steps, on the same objective

.. math::

   J = \\frac{1}{2N}\\sum_i \\lVert \\hat x_i - x_i\\rVert^2 + \\frac{\\lambda}{2}\\sum_j W_j\\cdot W_j

(``model.loss``; kfac-jax: the same sum, its output registered by ``register_squared_error_loss(x̂, x,
weight=0.5)``, whose loss is ``weight·Σ‖x̂ − x‖²/N``). The two GGNs, ``(1/N)ΣJᵢᵀJᵢ``, and so the two dampings,
are on one scale; the script checks before training that both losses and gradients agree. The reported
``train_error`` is the model's ``evaluate``: the mean over training images of the summed squared
reconstruction error.

Runs:

* ``mdc_jax.kfac``: the step of ``mdc-jax train`` with ``optimizer.name: kfac``, jitted:
  ``model.curvature.factors`` (loss, gradient and Kronecker factors from the closed-form backward,
  :func:`mdc_jax.curvature.fcnn_quantities`) and ``mdc_jax.optim.kfac``'s update, the config's settings.
* ``kfac_jax.matched``: ``kfac_jax.Optimizer``, its dense layers found by its graph matcher, with the mdc-jax
  run's learning rate (schedule), momentum, damping, factor EMA and inverse-update period, held fixed; no
  burn-in; the sampled GGN estimator (``ggn_curvature_prop``; ``ggn_exact`` for ``optimizer.factors:
  kflr``); exact inverses for ``optimizer.inverse: eigen``. The like-for-like run, and the one the per-step
  timing uses.
* ``kfac_jax.adaptive``: kfac-jax's own setting for deep autoencoders, as its
  ``examples/autoencoder_mnist/pipeline.py`` configures it: adaptive learning rate, momentum and damping
  (Levenberg–Marquardt every 5 steps, decay 0.95, λ in [1e-5, 1000]), inverses every 5 steps, EMA 0.95, 5
  burn-in steps; the initial damping (the example's 150.0 belongs to another loss scale) starts at the
  config's and is calibrated by kfac-jax (``use_initial_damping_calibration``); ``l2_reg`` = ``model.l2``
  (kfac-jax puts it in its curvature, biases included). Its README advises the adaptive learning rate and
  momentum for full-batch training only (``--batch-size 0``).

Differences that remain (kfac-jax's design, not settings): its dense block folds the bias into the
Kronecker factor (``A`` over ``[x, 1]``) where mdc-jax keeps a separate bias block ``B``; its factor EMA is
normalised by the accumulated weight (``Σ εᵏFₜ₋ₖ / Σ εᵏ``) where mdc-jax's takes the first factors as they are
and then ``ε·avg + (1 − ε)·new``; its sampled curvature uses Rademacher vectors, mdc-jax's labels drawn from
the model (Gaussian for the squared error), one per example either way.

Time: ``time_s`` counts steps 2, 3, ... (evaluation excluded, and any compilation inside a step, measured by
JAX's own compile events); step 1 (compilation, kfac-jax's graph matching, burn-in and damping calibration)
is reported as ``first_step_s``. ``timing`` alternates the compiled mdc-jax step and kfac-jax's matched step
on the same batches (the order swapped every repetition), ``--timing-reps`` times each after
``--timing-warmup`` steps each, and reports the ratio of medians, mdc-jax / kfac-jax (below 1: mdc-jax is
faster per step). On a CPU, OpenBLAS runs single-threaded unless ``OPENBLAS_NUM_THREADS`` says otherwise
(see the note at the imports).

Run it in the peer's environment (jax 0.9.0, which kfac-jax 0.0.8 needs)::

    scripts/kfac_jax_env.sh /work/kfacjax-venv
    /work/kfacjax-venv/bin/python scripts/compare_kfac_jax.py --out runs/kfac_jax   # the config's steps and batch
    /work/kfacjax-venv/bin/python scripts/compare_kfac_jax.py --steps 50 --set optimizer.damping=1.0 --out /tmp/kj

It writes ``<out>/results.json`` and ``<out>/curves.png``.
"""

from __future__ import annotations

import os

# Before NumPy and jaxlib load OpenBLAS: its threads (the LAPACK factorisations of both optimizers' inverses run
# there) fight XLA's own thread pool on a CPU; on a loaded 2-core machine a preconditioner refresh took 1.5 s
# for mdc-jax, 0.2 s for kfac-jax with OpenBLAS's default threads and 25 ms, 20 ms with one. Set the variable
# to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mdc_jax
from mdc_jax.experiment.config import load_config
from mdc_jax.experiment.models import Model, find_config, get_model
from mdc_jax.experiment.trainer import _learning_rate, make_optimizer  # the trainer's own optimizer and schedule
from mdc_jax.rules.fcnn import penalty

BURNIN_KEYS = 2**31  # kfac-jax's burn-in batches come from steps 2³¹ + k, which no training step uses
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class Problem(NamedTuple):
    """What both sides share: the config, the model (data, init, batches, loss, evaluation) and its activations."""

    cfg: Any
    model: Model
    acts: list[str]
    data_key: jax.Array
    init_params: Any
    batch: Any  # step -> the step's batch (X, X)


def make_problem(args) -> Problem:
    """The config with the command line's overrides, its model, the trainer's keys (``init_key, data_key =
    split(PRNGKey(train.seed))``) and step ``t``'s batch from ``fold_in(data_key, t)``; ``--batch-size 0``: the
    whole training split every step."""
    from mdc_jax_models.mlp import autoencoder_activations

    overrides = list(args.set)
    for key, value in (("steps", args.steps), ("seed", args.seed), ("batch_size", args.batch_size or None)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    cfg = load_config(find_config(args.config), overrides)
    args.steps = cfg.train.steps
    o = cfg.optimizer
    if cfg.model.kind != "mlp_autoencoder" or o.name != "kfac":
        raise SystemExit(f"--config {args.config}: expected model.kind mlp_autoencoder with optimizer.name kfac; got "
                         f"{cfg.model.kind} with {o.name}")
    if o.clip_norm > 0:
        raise SystemExit(f"--config {args.config}: optimizer.clip_norm {o.clip_norm} has no kfac-jax counterpart; "
                         f"set optimizer.clip_norm=0")
    model = get_model(cfg.model.kind).build(cfg)
    init_key, data_key = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    X = model.data["X_train"]
    sample = jax.jit(model.batch)

    def batch(t):
        return (X, X) if args.batch_size == 0 else sample(jax.random.fold_in(data_key, t))

    acts = autoencoder_activations(cfg.model.hidden, cfg.model.activations)
    return Problem(cfg, model, acts, data_key, model.init(init_key), batch)


def copy_tree(tree):
    return jax.tree.map(jnp.copy, tree)


# ---------------------------------------------------------------------------------------------------------
# The two sides, each (init(params) -> state, step(params, state, t, batch) -> (params, state, loss)).


def mdc_stepper(problem: Problem):
    """The trainer's kfac step: factors from the model's closed-form curvature, ``mdc_jax.optim.kfac``'s update."""
    cfg, model = problem.cfg, problem.model
    opt, exact = make_optimizer(cfg), cfg.optimizer.factors == "kflr"

    @jax.jit
    def step(params, state, batch, key):
        loss, grads, factors = model.curvature.factors(params, batch, key, exact)
        updates, state = opt.update(grads, state, params, factors=factors)
        return optax.apply_updates(params, updates), state, loss

    def run(params, state, t, batch):  # the trainer's curvature key: fold_in(fold_in(data_key, t), 1)
        return step(params, state, batch, jax.random.fold_in(jax.random.fold_in(problem.data_key, t), 1))

    return opt.init, run


def kfac_jax_loss(problem: Problem):
    """``model.loss`` in plain JAX (kfac-jax's graph matcher tags the dense layers of a traced forward; the
    closed-form rules are ``custom_vjp`` calls it does not look into), its output registered for kfac-jax."""
    import kfac_jax

    acts, l2 = problem.acts, problem.cfg.model.l2

    def loss(params, batch):
        X, Y = batch
        out = mdc_jax.fcnn_forward(params, X, acts)
        kfac_jax.register_squared_error_loss(out, Y, weight=0.5)  # weight·Σ‖x̂ − x‖²/N: J's data term
        return 0.5 * jnp.sum((out - Y) ** 2) / X.shape[0] + l2 * penalty(params)

    return loss


def kfac_jax_stepper(problem: Problem, mode: str, args):
    """``kfac_jax.Optimizer`` (automatic layer registration) in ``mode`` ``matched`` or ``adaptive``."""
    import kfac_jax

    o = problem.cfg.optimizer
    common = dict(value_and_grad_func=jax.value_and_grad(kfac_jax_loss(problem)), multi_device=False,
                  use_exact_inverses=o.inverse == "eigen")
    if mode == "matched":
        lr = _learning_rate(problem.cfg)
        opt = kfac_jax.Optimizer(
            **common, l2_reg=0.0,  # as mdc_jax.optim.kfac: the penalty is in the loss, not in the curvature
            learning_rate_schedule=lambda t: jnp.asarray(lr(t) if callable(lr) else lr, jnp.float32),
            momentum_schedule=lambda t: jnp.asarray(o.momentum, jnp.float32),
            damping_schedule=lambda t: jnp.asarray(o.damping, jnp.float32),
            curvature_ema=o.ema, inverse_update_period=o.update_every, num_burnin_steps=0,
            estimation_mode="ggn_exact" if o.factors == "kflr" else "ggn_curvature_prop")
        burnin = 0
    elif mode == "adaptive":  # examples/autoencoder_mnist/pipeline.py of kfac-jax 0.0.8
        opt = kfac_jax.Optimizer(
            **common, l2_reg=problem.cfg.model.l2, use_adaptive_learning_rate=True, use_adaptive_momentum=True,
            use_adaptive_damping=True, initial_damping=o.damping, use_initial_damping_calibration=True,
            min_damping=1e-5, max_damping=1000.0, damping_adaptation_interval=5, damping_adaptation_decay=0.95,
            inverse_update_period=5, num_burnin_steps=5, curvature_ema=0.95)
        burnin = 5
    else:
        raise SystemExit(f"--kfac-jax-modes: unknown mode {mode!r}; expected matched or adaptive")

    def first_batches(t) -> Iterator:  # the burn-in's batches, then step t's
        for k in range(burnin):
            yield problem.batch(BURNIN_KEYS + k)
        yield problem.batch(t)

    def init(params):
        return opt.init(params, jax.random.PRNGKey(problem.cfg.train.seed + 1), problem.batch(0))

    def run(params, state, t, batch):
        key = jax.random.fold_in(jax.random.fold_in(problem.data_key, t), 1)
        if t == 0 and burnin:
            params, state, stats = opt.step(params, state, key, data_iterator=first_batches(t), global_step_int=t)
        else:
            params, state, stats = opt.step(params, state, key, batch=batch, global_step_int=t)
        return params, state, stats["loss"]

    return init, run


# ---------------------------------------------------------------------------------------------------------
# Measurement


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling between two instants (its own compile events; nested
    spans counted once)."""

    def __init__(self):
        self.spans: list[tuple[float, float]] = []
        jax.monitoring.register_event_time_span_listener(self._record)

    def _record(self, event, start_time, end_time, **kwargs):
        if event in COMPILE_EVENTS:
            self.spans.append((start_time, end_time))

    def between(self, t0: float, t1: float) -> float:
        total, reach = 0.0, t0
        for s, e in sorted((max(s, t0), min(e, t1)) for s, e in self.spans if e > t0 and s < t1):
            if e > reach:
                total += e - max(s, reach)
                reach = e
        return total


def timed_step(step, params, state, t, batch, clock: CompileClock):
    jax.block_until_ready(batch)
    w0, t0 = time.time(), time.perf_counter()
    params, state, loss = step(params, state, t, batch)
    jax.block_until_ready((params, state, loss))
    dt = time.perf_counter() - t0
    return params, state, loss, dt, clock.between(w0, time.time())


def check_same_objective(problem: Problem, args) -> dict:
    """Both sides' loss and gradient at the initial parameters on step 0's batch (they must agree)."""
    batch = problem.batch(0)
    key = jax.random.PRNGKey(0)
    loss, grads, _ = jax.jit(lambda p, b: problem.model.curvature.factors(p, b, key, True))(problem.init_params, batch)
    kj_loss, kj_grads = jax.jit(jax.value_and_grad(kfac_jax_loss(problem)))(problem.init_params, batch)
    gap = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
              for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(kj_grads)))
    out = {"mdc_jax_loss": float(loss), "kfac_jax_loss": float(kj_loss), "max_relative_grad_gap": gap}
    if not (np.isclose(out["mdc_jax_loss"], out["kfac_jax_loss"], rtol=1e-5) and gap < 1e-4):
        raise SystemExit(f"the two sides' objectives differ at the initial parameters: {out}")
    return out


def train(name: str, stepper, problem: Problem, args, clock: CompileClock) -> dict[str, Any]:
    """``--steps`` steps; the model's ``train_error`` (whole training split) every ``--eval-every`` steps."""
    init, step = stepper
    params = copy_tree(problem.init_params)
    state = init(params)
    rec: dict[str, Any] = {"steps": [0], "time_s": [0.0], "step_times_s": [], "compile_s": [], "batch_loss": []}
    for key, value in problem.model.evaluate(params).items():  # train_error, test_error
        rec[key] = [value]
    elapsed = 0.0
    for t in range(args.steps):
        params, state, loss, dt, compiling = timed_step(step, params, state, t, problem.batch(t), clock)
        rec["step_times_s"].append(dt)
        rec["compile_s"].append(compiling)
        rec["batch_loss"].append(float(loss))
        if t == 0:
            rec["first_step_s"] = dt
        else:
            elapsed += dt - compiling
        if (t + 1) % args.eval_every == 0 or t + 1 == args.steps:
            metrics = problem.model.evaluate(params)
            for key, value in metrics.items():
                rec[key].append(value)
            rec["steps"].append(t + 1)
            rec["time_s"].append(elapsed)
            print(f"{name:18s} step {t + 1:6d}  train_error {metrics['train_error']:.5f}  {elapsed:8.2f} s", flush=True)
    rec["final_train_error"] = rec["train_error"][-1]
    steady = [dt - c for dt, c in zip(rec["step_times_s"][1:], rec["compile_s"][1:])]
    rec["median_step_s"] = statistics.median(steady) if steady else None
    return rec


def interleaved_timing(problem: Problem, steppers: dict[str, tuple], args, clock: CompileClock) -> dict[str, Any]:
    """The compiled steps alternated on the same batches (the order swapped every repetition): per-step
    times, their medians and the ratio of medians (the first name's over the second's)."""
    names = list(steppers)
    runs = {}
    for name, (init, step) in steppers.items():
        params = copy_tree(problem.init_params)
        runs[name] = [step, params, init(params)]
    times: dict[str, list[float]] = {name: [] for name in names}
    compiled = dict.fromkeys(names, 0.0)
    for t in range(args.timing_warmup + args.timing_reps):
        batch = problem.batch(t)
        for name in names if t % 2 == 0 else names[::-1]:
            step, params, state = runs[name]
            params, state, _, dt, compiling = timed_step(step, params, state, t, batch, clock)
            if t >= args.timing_warmup:
                times[name].append(dt)
                compiled[name] += compiling
            runs[name][1:] = [params, state]
    medians = {name: statistics.median(v) for name, v in times.items()}
    means = {name: statistics.fmean(v) for name, v in times.items()}
    refresh = {i for i, t in enumerate(range(args.timing_warmup, args.timing_warmup + args.timing_reps))
               if t % problem.cfg.optimizer.update_every == 0}  # steps that recompute the preconditioner, both sides
    out: dict[str, Any] = {"reps": args.timing_reps, "warmup": args.timing_warmup, "order": names,
                           "median_s": medians, "mean_s": means, "compile_s_during_timing": compiled,
                           "ratio_of_medians": medians[names[0]] / medians[names[1]],
                           "ratio_of_means": means[names[0]] / means[names[1]], "times_s": times}
    if refresh and len(refresh) < args.timing_reps:
        out["median_refresh_s"] = {n: statistics.median([v[i] for i in refresh]) for n, v in times.items()}
        out["median_other_s"] = {n: statistics.median([x for i, x in enumerate(v) if i not in refresh])
                                 for n, v in times.items()}
    return out


def finite_or_none(tree):
    """JSON has no NaN or infinity: a diverged run's values become ``null``."""
    if isinstance(tree, dict):
        return {k: finite_or_none(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [finite_or_none(v) for v in tree]
    return None if isinstance(tree, float) and not np.isfinite(tree) else tree


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rec in results["runs"].items():
        ax_steps.plot(rec["steps"], rec["train_error"], label=name)
        ax_time.plot(rec["time_s"], rec["train_error"], label=name)
    c = results["config"]
    batch = "full batch" if c["batch_size"] == 0 else f"batch {results['problem']['batch_size']}"
    for ax, xlabel in ((ax_steps, "step"), (ax_time, "seconds in steps (after step 1, compilation excluded)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training error (mean summed squared error)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Deep autoencoder {'-'.join(map(str, results['problem']['dims']))} on digits, {batch}, float32, "
                 f"{results['versions']['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="autoencoder_digits_kfac", help="a kfac config of mlp_autoencoder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="train.batch_size (default: the config's); 0: the whole training split every step")
    p.add_argument("--seed", type=int, default=None, help="train.seed, the init and the batches (default: the config's)")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and curves.png")
    p.add_argument("--eval-every", type=int, default=10, help="steps between evaluations of train_error")
    p.add_argument("--kfac-jax-modes", default="matched,adaptive", help="comma-separated: matched, adaptive")
    p.add_argument("--timing-reps", type=int, default=200, help="interleaved steps of each side; 0 skips")
    p.add_argument("--timing-warmup", type=int, default=10)
    args = p.parse_args(argv)
    for flag in ("steps", "eval_every"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.batch_size is not None and args.batch_size < 0:
        p.error(f"--batch-size must be >= 0 (0: the whole training split), got {args.batch_size}")
    if args.timing_reps < 0 or args.timing_warmup < 0:
        p.error("--timing-reps and --timing-warmup must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import kfac_jax

    jax.config.update("jax_enable_x64", False)  # float32 throughout, both sides
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")  # kfac-jax's step donates
    clock = CompileClock()
    problem = make_problem(args)
    modes = [m for m in args.kfac_jax_modes.split(",") if m]
    steppers = {"mdc_jax.kfac": mdc_stepper(problem)}
    steppers.update({f"kfac_jax.{m}": kfac_jax_stepper(problem, m, args) for m in modes})
    cfg = problem.cfg
    X = problem.model.data["X_train"]
    results: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "optimizer": {k: getattr(cfg.optimizer, k) for k in ("name", "learning_rate", "schedule", "damping", "ema",
                                                             "update_every", "momentum", "factors", "inverse")},
        "problem": {"dims": [X.shape[1], *cfg.model.hidden, X.shape[1]], "activations": problem.acts,
                    "l2": cfg.model.l2, "train_images": int(X.shape[0]), "dtype": str(X.dtype),
                    "batch_size": int(X.shape[0]) if args.batch_size == 0 else cfg.train.batch_size,
                    "objective": "J = 1/(2N) Σ‖x̂ − x‖² + (l2/2) Σ W·W; train_error = (1/N) Σ‖x̂ − x‖² on the "
                                 "whole training split"},
        "versions": {"jax": jax.__version__, "kfac_jax": kfac_jax.__version__, "optax": optax.__version__,
                     "mdc_jax": mdc_jax.__version__, "python": platform.python_version(),
                     "device": str(jax.devices()[0].device_kind),
                     "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
        "same_objective": check_same_objective(problem, args),
        "runs": {},
    }
    for name, stepper in steppers.items():
        results["runs"][name] = train(name, stepper, problem, args, clock)
    if args.timing_reps > 0 and "kfac_jax.matched" in steppers:
        timing = interleaved_timing(problem, {"mdc_jax.kfac": steppers["mdc_jax.kfac"],
                                              "kfac_jax.matched": steppers["kfac_jax.matched"]}, args, clock)
        results["timing"] = timing
        print(f"interleaved per-step medians ({timing['reps']} each): mdc_jax.kfac "
              f"{timing['median_s']['mdc_jax.kfac'] * 1e3:.3f} ms, kfac_jax.matched "
              f"{timing['median_s']['kfac_jax.matched'] * 1e3:.3f} ms; ratio of medians (mdc-jax / kfac-jax) "
              f"{timing['ratio_of_medians']:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(finite_or_none(results), indent=1, allow_nan=False))
    plot(results, args.out / "curves.png")
    for name, rec in results["runs"].items():
        print(f"{name:18s} final train_error {rec['final_train_error']:.5f}  median step "
              f"{(rec['median_step_s'] or 0) * 1e3:.3f} ms  first step {rec['first_step_s']:.2f} s")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
