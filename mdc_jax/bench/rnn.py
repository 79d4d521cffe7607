"""RNN loss (seed 000 §6.4): closed-form BPTT rule vs `jax.grad` of the plain `lax.scan` reference.

Both sides compute the loss and the parameter gradients (``jax.value_and_grad`` in ``params``).
``extra`` also holds the temp memory when every argument's cotangent is asked for (``Z0``, ``X``,
``Y`` too) and the size of the hidden states ``Z_0..Z_{τ−1}``, the floor for any rule that does not
recompute the forward.

The checkpointed cases (issue 23) time three programs interleaved: the rule with
``checkpoint_every=k`` (the table's "closed"), the rule keeping every state, and ``jax.grad`` of the
reference (the table's "autodiff"); the issue's targets at τ = 1000, N = 32, H = 256, K = 64 with
``k = 32 ≈ √τ``: temp ≤ 0.10× autodiff's and ≤ 0.35× the rule's, time ≤ 1.35× the rule's.
"""

from __future__ import annotations

import functools

import jax

from ..reference import rnn as reference
from ..rules import rnn
from ..testing import rel_err
from . import torch_cases
from .timing import DTYPE_TAGS, CaseResult, case_dtype, compiled, fmt, interleaved_medians

# (name, τ, N, D, H, K): the size, and a seconds-long one for --suite small. Names end with the dtype's tag.
SUITES = {
    "full": [("rnn τ=200 N=128 D=256 H=512 K=256", 200, 128, 256, 512, 256)],
    "small": [("rnn τ=20 N=16 D=32 H=64 K=32", 20, 16, 32, 64, 32)],
}
# (name, τ, N, D, H, K, k): checkpointed BPTT, k ≈ √τ (32 segments of 32 steps and one of 8 at τ = 1000).
CHECKPOINT_SUITES = {
    "full": [("rnn checkpoint_every=32 τ=1000 N=32 D=64 H=256 K=64", 1000, 32, 64, 256, 64, 32)],
    "small": [("rnn checkpoint_every=7 τ=50 N=8 D=16 H=32 K=16", 50, 8, 16, 32, 16, 7)],
}
DTYPES = ("float32", "bfloat16")  # bfloat16: tests/test_rnn.py holds its values to float32's
CHECKPOINT_TARGETS = {"temp_vs_autodiff": 0.10, "temp_vs_rule": 0.35, "time_vs_rule": 1.35}


def training_flops(tau: int, n: int, d: int, h: int, k: int) -> float:
    """FLOPs of the closed-form loss-and-parameter-gradient program: per step, forward Z_{t−1}W,
    X_tU, Z_tV; backward Z_tV again (recomputed), ∇_{O_t}J Vᵀ, Z_tᵀ∇_{O_t}J, Z_{t−1}ᵀ∇_{A_t}J,
    X_tᵀ∇_{A_t}J and ∇_{A_t}J Wᵀ (∇_X J is not asked for)."""
    return 2 * tau * n * (3 * h * h + 2 * d * h + 4 * h * k)


def _checkpoint_case(name, tau, n, d, h, k, every, rounds, dtype="float32"):
    dt = case_dtype("rnn", dtype, DTYPES)
    case = reference.rnn_case(0, tau, n, d, h, k, dt)
    programs = {"checkpointed": functools.partial(rnn.rnn_loss, checkpoint_every=every), "rule": rnn.rnn_loss,
                "autodiff": reference.rnn_loss}
    runners, temps = {}, {}
    for key, loss in programs.items():
        runners[key], temps[key] = compiled(jax.value_and_grad(loss), *case)
    outs = {key: jax.block_until_ready(runners[key]()) for key in ("checkpointed", "rule")}
    agreement = rel_err(outs["checkpointed"], outs["rule"])
    del outs
    ms = interleaved_medians(runners, rounds=rounds)
    ratios = {"temp_vs_autodiff": temps["checkpointed"] / temps["autodiff"],
              "temp_vs_rule": temps["checkpointed"] / temps["rule"],
              "time_vs_rule": ms["checkpointed"] / ms["rule"]}
    extra = {"checkpoint_every": every, "rule_ms": ms["rule"], "rule_temp_bytes": temps["rule"], **ratios,
             "targets_met": {key: ratios[key] <= target for key, target in CHECKPOINT_TARGETS.items()},
             "hidden_states_bytes": tau * n * h * dt.itemsize, "checkpoints_bytes": -(-tau // every) * n * h * dt.itemsize,
             "rel_err_vs_rule": agreement}
    flops = training_flops(tau, n, d, h, k) + 2 * tau * n * (h * h + d * h)  # + the recomputed recursion
    return CaseResult(f"{name} {DTYPE_TAGS[dtype]}", ms["checkpointed"], ms["autodiff"], temps["checkpointed"],
                      temps["autodiff"], flops=flops, extra=extra, dtype=dtype)


def run_cases(suite: str = "full", rounds: int = 21, dtype: str = "float32") -> list[CaseResult]:
    dt, results = case_dtype("rnn", dtype, DTYPES), []
    for name, tau, n, d, h, k in SUITES[suite]:
        case = reference.rnn_case(0, tau, n, d, h, k, dt)
        run_closed, temp_closed = compiled(jax.value_and_grad(rnn.rnn_loss), *case)
        run_auto, temp_auto = compiled(jax.value_and_grad(reference.rnn_loss), *case)
        _, temp_closed_all = compiled(jax.value_and_grad(rnn.rnn_loss, argnums=(0, 1, 2, 3)), *case)
        _, temp_auto_all = compiled(jax.value_and_grad(reference.rnn_loss, argnums=(0, 1, 2, 3)), *case)
        runners = {"closed": run_closed, "autodiff": run_auto}
        torch_run = torch_cases.rnn(*case)
        if torch_run is not None:
            runners["torch"] = torch_run
        ms = interleaved_medians(runners, rounds=rounds)
        extra = {**({"torch_ms": ms["torch"], "closed_vs_torch": ms["closed"] / ms["torch"]} if "torch" in ms else {}),
                 "closed_temp_bytes_all_args": temp_closed_all, "autodiff_temp_bytes_all_args": temp_auto_all,
                 "hidden_states_bytes": tau * n * h * dt.itemsize,
                 "chunk": rnn.chunk_size(tau)}
        results.append(CaseResult(f"{name} {DTYPE_TAGS[dtype]}", ms["closed"], ms["autodiff"], temp_closed, temp_auto,
                                  flops=training_flops(tau, n, d, h, k), extra=extra, dtype=dtype))
    results += [_checkpoint_case(*spec, rounds, dtype) for spec in CHECKPOINT_SUITES[suite]]
    return results


def format_details(results: list[CaseResult]) -> str:
    """The checkpointed cases: the rule with checkpoint_every against the rule keeping every state and autodiff."""
    mib = lambda b: f"{b / 2**20:.1f}"
    lines = ["| case | k | checkpointed ms | rule ms | autodiff ms | time / rule | checkpointed temp MiB | rule temp MiB "
             "| autodiff temp MiB | temp / rule | temp / autodiff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        e = r.extra
        if "checkpoint_every" not in e:
            continue
        lines.append(f"| {r.name} | {e['checkpoint_every']} | {fmt(r.closed_ms)} | {fmt(e['rule_ms'])} | "
                     f"{fmt(r.autodiff_ms)} | {fmt(e['time_vs_rule'])} | {mib(r.closed_temp_bytes)} | "
                     f"{mib(e['rule_temp_bytes'])} | {mib(r.autodiff_temp_bytes)} | {fmt(e['temp_vs_rule'])} | "
                     f"{fmt(e['temp_vs_autodiff'])} |")
    return "\n".join(lines)
