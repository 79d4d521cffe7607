"""The deep autoencoder of issue 22 trained by ``mdc-jax train``'s K-FAC step and by kfac-jax 0.0.8 (the peer).

Both sides train the model ``mlp_autoencoder`` of a kfac config (by default ``autoencoder_digits_kfac``:
64-256-128-32-128-256-64, logistic hidden units, a linear code layer and a linear output, on scikit-learn's
digits, pixels / 16, the training split) from the same initial parameters, on the same batches, in float32,
for the same steps, on the same objective

.. math::

   J = \\frac{1}{2N}\\sum_i \\lVert \\hat x_i - x_i\\rVert^2 + \\frac{\\lambda_2}{2}\\sum_j W_j\\cdot W_j

(``model.loss``; kfac-jax: the same sum, its output registered by ``register_squared_error_loss(x̂, x,
weight=0.5)``, whose loss is ``weight·Σ‖x̂ − x‖²/N``). The two GGNs, ``(1/N)ΣJᵢᵀJᵢ``, and so the two dampings,
are on one scale; the script checks before training that both losses and gradients agree. The reported
``train_error`` is the model's ``evaluate``: the mean over training images of the summed squared
reconstruction error.

The mdc-jax side is the trainer's own step, not a copy of it: :func:`mdc_jax.experiment.trainer.make_optimizer`
(the config's ``kfac``, ``adaptive`` included) and the step ``mdc-jax train`` jits
(``trainer._compile_step``: step ``t``'s batch from ``fold_in(data_key, t)``, then ``_curvature_update``:
``model.curvature.factors`` and, with ``optimizer.adaptive``, ``model.curvature.ggn_gram`` and ``model.loss`` on
the same batch, into the optimizer's update), lowered and compiled ahead and called as the compiled executable,
as ``trainer._compile_ahead`` does; parameters and data key from ``trainer._initial_state``. Those are the
trainer's only private helpers used here. kfac-jax draws step ``t``'s batch with the same ``model.batch`` from
the same key, inside its timed step (so both steps include the draw), and its sampling key is the trainer's
curvature key ``fold_in(fold_in(data_key, t), 1)``.

kfac-jax's mode is the config's peer (``--kfac-jax-modes auto``, the default):

* ``kfac_jax.adaptive``, for ``optimizer.adaptive: true``: ``use_adaptive_learning_rate``,
  ``use_adaptive_momentum`` and ``use_adaptive_damping``, as kfac-jax's ``examples/autoencoder_mnist`` runs the
  deep autoencoder, with the knobs mdc-jax's adaptive mode has set to the same values: initial damping
  ``optimizer.damping``, factor EMA ``optimizer.ema``, inverses every ``optimizer.update_every`` steps,
  Levenberg–Marquardt every 5 steps by ``0.95⁵`` (mdc-jax's ``adapt_every`` and ``DECAY``), ``λ ≥ 1e-8`` with no
  ceiling (both libraries' defaults), the damping inside the quadratic model's change
  (``include_damping_in_quad_change=True``: mdc-jax's ``M(δ)`` includes ``λ``), no burn-in and no initial damping
  calibration (mdc-jax has neither; the example uses 5 burn-in steps, a calibrated initial λ, inverses every 5
  steps and ``λ ∈ [1e-5, 1000]``), ``l2_reg = model.l2`` (in the quadratic model, as mdc-jax's ``ggn_gram`` has
  it). Per step, mdc-jax: one closed-form forward and backward giving the loss, the gradient and the sampled
  Kronecker factors; ``[Δ δ₀]ᵀ G [Δ δ₀]``, the closed-form Gram matrix (one forward and the two tangent forwards
  ``J Δ``, ``J δ₀``, with ``H`` applied at the output; no backward); the 2×2 solve for ``α, μ``; every 5th step
  one more loss at ``θ + δ``; every ``update_every``-th step the factored inverses. kfac-jax: its
  curvature-estimator update (a forward and a backward of Rademacher-sampled output tangents through the tagged
  graph, and the factor statistics), the loss and gradient (``jax.value_and_grad``: another forward and
  backward), ``J Δ`` and ``J δ₀`` (two Jacobian-vector products; the quadratic model needs ``vᵀJᵀHJv`` only, so
  no backward), the 2×2 solve; every 5th step one more loss; every ``update_every``-th step its inverses.
* ``kfac_jax.matched``, for a fixed-step config (``optimizer.adaptive: false``): the config's learning rate
  (schedule), momentum, damping, factor EMA and inverse period, held fixed; ``l2_reg = 0`` (as mdc-jax's
  preconditioner, the penalty is in the loss only); no burn-in. Refused for an adaptive config, whose
  ``learning_rate`` and ``momentum`` mdc-jax does not use.

Both: the sampled GGN estimator (``ggn_curvature_prop``; ``ggn_exact`` for ``optimizer.factors: kflr``); exact
inverses for ``optimizer.inverse: eigen``. Differences that remain (kfac-jax's design, not settings): its dense
block folds the bias into the Kronecker factor (``A`` over ``[x, 1]``) where mdc-jax keeps a separate bias block
``B``; its factor EMA is normalised by the accumulated weight (``Σ εᵏFₜ₋ₖ / Σ εᵏ``) where mdc-jax's takes the
first factors as they are and then ``ε·avg + (1 − ε)·new``; its sampled curvature uses Rademacher vectors,
mdc-jax's labels drawn from the model (Gaussian for the squared error); its ``l2_reg`` puts the penalty's
curvature on the biases too, and (adaptive) adds it to the preconditioner's damping; where the quadratic model
predicts no decrease mdc-jax sets ``ρ = 0`` (λ rises).

Time: ``time_s`` counts steps 2, 3, ... (evaluation excluded, and any compilation inside a step, measured by
JAX's own compile events; kfac-jax compiles a second variant of its step at its first damping adaptation);
step 1 (compilation) is reported as ``first_step_s``. ``timing`` alternates the compiled mdc-jax step and
kfac-jax's peer step on the same batches (the order swapped every repetition), ``--timing-reps`` times each
after ``--timing-warmup`` steps each, and reports the ratio of medians, mdc-jax / kfac-jax (below 1: mdc-jax is
faster per step), and the medians of the steps that refresh the inverses, of those that adapt the damping
(adaptive) and of the others. On a CPU, OpenBLAS runs single-threaded unless ``OPENBLAS_NUM_THREADS`` says
otherwise (see the note at the imports).

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
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mdc_jax
from mdc_jax.experiment.config import load_config
from mdc_jax.experiment.models import Model, find_config, get_model
from mdc_jax.experiment.trainer import _compile_step, _initial_state, _learning_rate, make_optimizer
from mdc_jax.rules.fcnn import penalty

COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
ADAPT_EVERY = 5  # mdc_jax.optim.kfac's adapt_every (the trainer keeps its default), kfac-jax's adaptation interval
ADAPT_DECAY = 0.95  # mdc_jax.optim.kfac's DECAY: λ moves by 0.95**5 per adaptation, kfac-jax's adaptation decay
FIGURES = ("damping", "alpha", "mu", "rho")  # what each run records of its optimizer at every evaluation


class Problem(NamedTuple):
    """What both sides share: the config, the model (data, init, batches, loss, evaluation) and its activations,
    the trainer's initial parameters and data key."""

    cfg: Any
    model: Model
    acts: list[str]
    data_key: jax.Array
    init_params: Any


class Stepper(NamedTuple):
    """One side: ``init(params) -> state``; ``step(params, state, t) -> (params, state, loss)``, step ``t`` (1, 2,
    ...) drawing its own batch; ``figures(state, loss) -> dict``: ``FIGURES`` after the last step."""

    init: Any
    step: Any
    figures: Any


def make_problem(args) -> Problem:
    """The config with the command line's overrides, its model, and the trainer's step 0
    (``trainer._initial_state``: ``init_key, data_key = split(PRNGKey(train.seed))``, ``model.init(init_key)``)."""
    from mdc_jax_models.mlp import autoencoder_activations

    overrides = list(args.set)
    for key, value in (("steps", args.steps), ("seed", args.seed), ("batch_size", args.batch_size),
                       ("eval_every", args.eval_every)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    cfg = load_config(find_config(args.config), overrides)
    args.steps, args.eval_every = cfg.train.steps, cfg.train.eval_every
    o = cfg.optimizer
    if cfg.model.kind != "mlp_autoencoder" or o.name != "kfac":
        raise SystemExit(f"--config {args.config}: expected model.kind mlp_autoencoder with optimizer.name kfac; got "
                         f"{cfg.model.kind} with {o.name}")
    if o.clip_norm > 0:
        raise SystemExit(f"--config {args.config}: optimizer.clip_norm {o.clip_norm} has no kfac-jax counterpart; "
                         f"set optimizer.clip_norm=0")
    if cfg.train.grad != "closed":
        raise SystemExit(f"--config {args.config}: train.grad {cfg.train.grad!r}; the comparison runs the closed-form "
                         f"step (train.grad=closed)")
    model = get_model(cfg.model.kind).build(cfg)
    state = _initial_state(cfg, model, make_optimizer(cfg))
    acts = autoencoder_activations(cfg.model.hidden, cfg.model.activations)
    return Problem(cfg, model, acts, state.data_key, state.params)


def copy_tree(tree):
    return jax.tree.map(jnp.copy, tree)


def batch_key(problem: Problem, t: int) -> jax.Array:
    """The trainer's key of step ``t``: its batch comes from it, the sampled curvature from ``fold_in(·, 1)``."""
    return jax.random.fold_in(problem.data_key, t)


def scalars(values: dict) -> dict:
    return {k: (float(v) if v is not None else None) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------------------
# The two sides


def mdc_stepper(problem: Problem) -> Stepper:
    """The step of ``mdc-jax train``: ``trainer._compile_step`` (batch, ``_curvature_update``, ``apply_updates``)
    of ``make_optimizer(cfg)``, lowered and compiled at the first call and then called as the compiled
    executable (``trainer._compile_ahead``)."""
    cfg = problem.cfg
    opt = make_optimizer(cfg)
    jitted = _compile_step(cfg, problem.model, opt, None, None, problem.data_key)
    compiled = []

    def step(params, state, t):
        t = jnp.asarray(t, jnp.int32)
        if not compiled:
            compiled.append(jitted.lower(params, state, t).compile())
        return compiled[0](params, state, t)

    def figures(state, loss):  # KFACState's fields by name (a clipping chain around it is no matter)
        return scalars({name: optax.tree_utils.tree_get(state, name) for name in FIGURES})

    return Stepper(opt.init, step, figures)


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


def kfac_jax_stepper(problem: Problem, mode: str) -> Stepper:
    """``kfac_jax.Optimizer`` (automatic layer registration) in ``mode`` ``adaptive`` or ``matched`` (see the
    module docstring)."""
    import kfac_jax

    o = problem.cfg.optimizer
    common = dict(value_and_grad_func=jax.value_and_grad(kfac_jax_loss(problem)), multi_device=False,
                  use_exact_inverses=o.inverse == "eigen", curvature_ema=o.ema, inverse_update_period=o.update_every,
                  num_burnin_steps=0, estimation_mode="ggn_exact" if o.factors == "kflr" else "ggn_curvature_prop")
    if mode == "adaptive":
        opt = kfac_jax.Optimizer(
            **common, l2_reg=problem.cfg.model.l2, use_adaptive_learning_rate=True, use_adaptive_momentum=True,
            use_adaptive_damping=True, initial_damping=o.damping, use_initial_damping_calibration=False,
            damping_adaptation_interval=ADAPT_EVERY, damping_adaptation_decay=ADAPT_DECAY, min_damping=1e-8,
            include_damping_in_quad_change=True)
    elif mode == "matched":
        lr = _learning_rate(problem.cfg)
        opt = kfac_jax.Optimizer(
            **common, l2_reg=0.0,  # as mdc_jax.optim.kfac: the penalty is in the loss, not in the curvature
            learning_rate_schedule=lambda t: jnp.asarray(lr(t) if callable(lr) else lr, jnp.float32),
            momentum_schedule=lambda t: jnp.asarray(o.momentum, jnp.float32),
            damping_schedule=lambda t: jnp.asarray(o.damping, jnp.float32))
    else:
        raise SystemExit(f"--kfac-jax-modes: unknown mode {mode!r}; expected auto, adaptive or matched")
    sample = jax.jit(problem.model.batch)

    def init(params):
        return opt.init(params, jax.random.PRNGKey(problem.cfg.train.seed + 1), sample(batch_key(problem, 1)))

    def step(params, state, t):  # kfac-jax counts steps from 0; the trainer's step t is its step t − 1
        key = batch_key(problem, t)
        params, state, stats = opt.step(params, state, jax.random.fold_in(key, 1), batch=sample(key),
                                        global_step_int=t - 1)
        step.stats = stats
        return params, state, stats["loss"]

    def figures(state, loss):  # λ of the next step (as mdc-jax's state), this step's α, μ and ρ (NaN: not adapted)
        s = step.stats
        damping = state.damping if mode == "adaptive" else s["damping"]  # fixed: the state holds a placeholder
        return scalars({"damping": damping, "alpha": s["learning_rate"], "mu": s["momentum"], "rho": s["rho"]})

    return Stepper(init, step, figures)


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


def timed_step(step, params, state, t, clock: CompileClock):
    """One step (its batch drawn inside), to the end of its computation: ``(params, state, loss, seconds,
    seconds of them compiling)``."""
    w0, t0 = time.time(), time.perf_counter()
    params, state, loss = step(params, state, t)
    jax.block_until_ready((params, state, loss))
    dt = time.perf_counter() - t0
    return params, state, loss, dt, clock.between(w0, time.time())


def check_same_objective(problem: Problem) -> dict:
    """Both sides' loss and gradient at the initial parameters on step 1's batch (they must agree)."""
    batch = jax.jit(problem.model.batch)(batch_key(problem, 1))
    key = jax.random.PRNGKey(0)
    loss, grads, _ = jax.jit(lambda p, b: problem.model.curvature.factors(p, b, key, True))(problem.init_params, batch)
    kj_loss, kj_grads = jax.jit(jax.value_and_grad(kfac_jax_loss(problem)))(problem.init_params, batch)
    gap = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
              for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(kj_grads)))
    out = {"mdc_jax_loss": float(loss), "kfac_jax_loss": float(kj_loss), "max_relative_grad_gap": gap}
    if not (np.isclose(out["mdc_jax_loss"], out["kfac_jax_loss"], rtol=1e-5) and gap < 1e-4):
        raise SystemExit(f"the two sides' objectives differ at the initial parameters: {out}")
    return out


def train(name: str, stepper: Stepper, problem: Problem, args, clock: CompileClock) -> dict[str, Any]:
    """``train.steps`` steps; the model's ``evaluate`` (``train_error``, ``test_error``) and the optimizer's λ,
    α, μ and last ρ every ``train.eval_every`` steps and at the last."""
    params = copy_tree(problem.init_params)
    state = stepper.init(params)
    rec: dict[str, Any] = {"steps": [0], "time_s": [0.0], "step_times_s": [], "compile_s": [], "batch_loss": []}
    for key, value in problem.model.evaluate(params).items():
        rec[key] = [value]
    for key in FIGURES:
        rec[key] = [None]
    elapsed, last_rho = 0.0, None
    for t in range(1, args.steps + 1):
        params, state, loss, dt, compiling = timed_step(stepper.step, params, state, t, clock)
        rec["step_times_s"].append(dt)
        rec["compile_s"].append(compiling)
        rec["batch_loss"].append(float(loss))
        figures = stepper.figures(state, loss)
        if figures["rho"] is not None and math.isfinite(figures["rho"]):
            last_rho = figures["rho"]
        figures["rho"] = last_rho  # the last adaptation's
        if t == 1:
            rec["first_step_s"] = dt
        else:
            elapsed += dt - compiling
        if t % args.eval_every == 0 or t == args.steps:
            for key, value in [*problem.model.evaluate(params).items(), *figures.items()]:
                rec[key].append(value)
            rec["steps"].append(t)
            rec["time_s"].append(elapsed)
            print(f"{name:18s} step {t:6d}  train_error {rec['train_error'][-1]:.5f}  damping "
                  f"{figures['damping']:.3g}  alpha {figures['alpha']:.3g}  mu {figures['mu']:.3g}  {elapsed:8.2f} s",
                  flush=True)
    rec["final_train_error"] = rec["train_error"][-1]
    steady = [dt - c for dt, c in zip(rec["step_times_s"][1:], rec["compile_s"][1:])]
    rec["median_step_s"] = statistics.median(steady) if steady else None
    return rec


def step_kind(t: int, cfg) -> str:
    """What step ``t`` (1, 2, ...) does beyond the common work, the same on both sides: ``refresh`` (the
    inverses, at count ``t − 1 ≡ 0 mod update_every``), ``adapt`` (adaptive: one more loss and the LM rule, at
    count ``t − 1 ≡ −1 mod 5``) or ``other``."""
    count = t - 1
    if count % cfg.optimizer.update_every == 0:
        return "refresh"
    if cfg.optimizer.adaptive and (count + 1) % ADAPT_EVERY == 0:
        return "adapt"
    return "other"


def interleaved_timing(problem: Problem, steppers: dict[str, Stepper], args, clock: CompileClock) -> dict[str, Any]:
    """The compiled steps alternated on the same batches (the order swapped every repetition): per-step
    times, their medians (all, and by :func:`step_kind`) and the ratio of medians (the first name's over the
    second's)."""
    names = list(steppers)
    runs = {}
    for name, stepper in steppers.items():
        params = copy_tree(problem.init_params)
        runs[name] = [params, stepper.init(params)]
    times: dict[str, list[float]] = {name: [] for name in names}
    kinds: list[str] = []
    compiled = dict.fromkeys(names, 0.0)
    for t in range(1, args.timing_warmup + args.timing_reps + 1):
        for name in names if t % 2 == 0 else names[::-1]:
            params, state, _, dt, compiling = timed_step(steppers[name].step, *runs[name], t, clock)
            if t > args.timing_warmup:
                times[name].append(dt)
                compiled[name] += compiling
            runs[name] = [params, state]
        if t > args.timing_warmup:
            kinds.append(step_kind(t, problem.cfg))
    medians = {name: statistics.median(v) for name, v in times.items()}
    means = {name: statistics.fmean(v) for name, v in times.items()}
    out: dict[str, Any] = {"reps": args.timing_reps, "warmup": args.timing_warmup, "order": names,
                           "median_s": medians, "mean_s": means, "compile_s_during_timing": compiled,
                           "ratio_of_medians": medians[names[0]] / medians[names[1]],
                           "ratio_of_means": means[names[0]] / means[names[1]], "by_kind": {}}
    for kind in ("refresh", "adapt", "other"):
        picked = [i for i, k in enumerate(kinds) if k == kind]
        if picked:
            m = {name: statistics.median([v[i] for i in picked]) for name, v in times.items()}
            out["by_kind"][kind] = {"count": len(picked), "median_s": m, "ratio_of_medians": m[names[0]] / m[names[1]]}
    out["kinds"], out["times_s"] = kinds, times
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

    fig, (ax_steps, ax_time, ax_damping) = plt.subplots(1, 3, figsize=(15, 4))
    for name, rec in results["runs"].items():
        ax_steps.plot(rec["steps"], rec["train_error"], label=name)
        ax_time.plot(rec["time_s"], rec["train_error"], label=name)
        ax_damping.plot(rec["steps"][1:], rec["damping"][1:], label=name)
    for ax, xlabel, ylabel in ((ax_steps, "step", "training error (mean summed squared error)"),
                               (ax_time, "seconds in steps (after step 1, compilation excluded)",
                                "training error (mean summed squared error)"),
                               (ax_damping, "step", "damping λ")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    p, o = results["problem"], results["optimizer"]
    mode = "adaptive α, μ, λ" if o["adaptive"] else f"lr {o['learning_rate']}, momentum {o['momentum']}, λ {o['damping']}"
    timing = results.get("timing")
    ratio = f"; per-step median ratio mdc/kfac-jax {timing['ratio_of_medians']:.2f}" if timing else ""
    fig.suptitle(f"Deep autoencoder {'-'.join(map(str, p['dims']))} on digits, batch {p['batch_size']}, float32, "
                 f"K-FAC ({mode}), {results['versions']['device']}{ratio}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="autoencoder_digits_kfac", help="a kfac config of mlp_autoencoder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None, help="train.batch_size (default: the config's)")
    p.add_argument("--seed", type=int, default=None, help="train.seed, the init and the batches (default: the config's)")
    p.add_argument("--eval-every", type=int, default=None, help="train.eval_every (default: the config's)")
    p.add_argument("--out", type=Path, required=True, help="folder for results.json and curves.png")
    p.add_argument("--kfac-jax-modes", default="auto",
                   help="comma-separated kfac-jax runs: auto (the config's peer: adaptive if optimizer.adaptive, "
                        "else matched), adaptive, matched; the peer is always run, and timed")
    p.add_argument("--timing-reps", type=int, default=200, help="interleaved steps of each side; 0 skips")
    p.add_argument("--timing-warmup", type=int, default=10)
    args = p.parse_args(argv)
    for flag in ("steps", "eval_every", "batch_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.timing_reps < 0 or args.timing_warmup < 0:
        p.error("--timing-reps and --timing-warmup must be >= 0")
    return args


def kfac_jax_modes(args, cfg) -> list[str]:
    """The kfac-jax runs: the config's peer first, then any other mode asked for."""
    peer = "adaptive" if cfg.optimizer.adaptive else "matched"
    asked = [peer if m == "auto" else m for m in args.kfac_jax_modes.split(",") if m]
    if cfg.optimizer.adaptive and "matched" in asked:
        raise SystemExit("--kfac-jax-modes matched: the config has optimizer.adaptive true, so mdc-jax does not use "
                         "its learning_rate and momentum and no fixed-step kfac-jax run matches it; set "
                         "optimizer.adaptive=false or drop matched")
    return list(dict.fromkeys([peer, *asked]))


def main(argv=None) -> int:
    args = parse_args(argv)
    import kfac_jax

    jax.config.update("jax_enable_x64", False)  # float32 throughout, both sides
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")  # kfac-jax's step donates
    clock = CompileClock()
    problem = make_problem(args)
    cfg = problem.cfg
    modes = kfac_jax_modes(args, cfg)
    steppers = {"mdc_jax.kfac": mdc_stepper(problem)}
    steppers.update({f"kfac_jax.{m}": kfac_jax_stepper(problem, m) for m in modes})
    peer = f"kfac_jax.{modes[0]}"
    X = problem.model.data["X_train"]
    results: dict[str, Any] = {
        "command": " ".join(["scripts/compare_kfac_jax.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "optimizer": {k: getattr(cfg.optimizer, k) for k in ("name", "adaptive", "learning_rate", "schedule",
                                                             "damping", "ema", "update_every", "momentum", "factors",
                                                             "inverse")},
        "peer": peer,
        "problem": {"dims": [X.shape[1], *cfg.model.hidden, X.shape[1]], "activations": problem.acts,
                    "l2": cfg.model.l2, "train_images": int(X.shape[0]), "dtype": str(X.dtype),
                    "batch_size": cfg.train.batch_size, "seed": cfg.train.seed,
                    "objective": "J = 1/(2N) Σ‖x̂ − x‖² + (l2/2) Σ W·W; train_error = (1/N) Σ‖x̂ − x‖² on the "
                                 "whole training split"},
        "versions": {"jax": jax.__version__, "kfac_jax": kfac_jax.__version__, "optax": optax.__version__,
                     "mdc_jax": mdc_jax.__version__, "python": platform.python_version(),
                     "device": str(jax.devices()[0].device_kind),
                     "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
        "same_objective": check_same_objective(problem),
        "runs": {},
    }
    for name, stepper in steppers.items():
        results["runs"][name] = train(name, stepper, problem, args, clock)
    if args.timing_reps > 0:
        timing = interleaved_timing(problem, {"mdc_jax.kfac": steppers["mdc_jax.kfac"], peer: steppers[peer]}, args,
                                    clock)
        results["timing"] = timing
        m = timing["median_s"]
        print(f"interleaved per-step medians ({timing['reps']} each): mdc_jax.kfac {m['mdc_jax.kfac'] * 1e3:.3f} ms, "
              f"{peer} {m[peer] * 1e3:.3f} ms; ratio of medians (mdc-jax / kfac-jax) {timing['ratio_of_medians']:.3f}",
              flush=True)
        for kind, k in timing["by_kind"].items():
            print(f"  {kind:8s} ({k['count']:3d}): mdc_jax.kfac {k['median_s']['mdc_jax.kfac'] * 1e3:.3f} ms, {peer} "
                  f"{k['median_s'][peer] * 1e3:.3f} ms, ratio {k['ratio_of_medians']:.3f}", flush=True)
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
