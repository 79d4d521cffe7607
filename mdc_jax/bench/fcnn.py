"""FCNN classification: closed-form rule vs `jax.grad` of the reference (seed 000 §6.3)."""

from __future__ import annotations

import jax

from ..reference import fcnn as reference
from ..rules import fcnn
from . import torch_cases
from .timing import CaseResult, case_dtype, compiled, dtype_tag, interleaved_medians

# (name, N, widths, activation); the two sizes, and a seconds-long pair for --suite small.
SUITES = {
    "full": [("fcnn_cls N=256 784-512-512-10 tanh", 256, [784, 512, 512, 10], "tanh"),
             ("fcnn_cls N=4096 1024x4-10 tanh", 4096, [1024, 1024, 1024, 1024, 10], "tanh")],
    "small": [("fcnn_cls N=64 64-128-10 tanh", 64, [64, 128, 10], "tanh"),
              ("fcnn_cls N=512 256-256-256-10 tanh", 512, [256, 256, 256, 10], "tanh")],
}
DTYPES = ("float32", "bfloat16")  # bfloat16: tests/test_fcnn.py holds its values to float32's


def training_flops(n: int, dims: list[int]) -> float:
    """FLOPs of one loss-and-parameter-gradient evaluation: forward 2N·d_{j−1}d_j per layer;
    backward Z_{j−1}ᵀS_j for every layer and S_jW_jᵀ for all but the first (∇X is not asked for)."""
    layer = [2 * n * a * b for a, b in zip(dims[:-1], dims[1:])]
    return 3 * sum(layer) - layer[0]


def run_cases(suite: str = "full", rounds: int = 21, dtype: str = "float32") -> list[CaseResult]:
    dt, results = case_dtype("fcnn", dtype, DTYPES), []
    for name, n, dims, act in SUITES[suite]:
        params, X, Y = reference.mlp_case(0, n, dims, dt)
        acts = [act] * (len(dims) - 2)
        closed = jax.value_and_grad(lambda p, X, Y: fcnn.fcnn_classification_loss(p, X, Y, acts, 1e-4))
        auto = jax.value_and_grad(lambda p, X, Y: reference.fcnn_classification_loss(p, X, Y, acts, 1e-4))
        run_closed, temp_closed = compiled(closed, params, X, Y)
        run_auto, temp_auto = compiled(auto, params, X, Y)
        runners = {"closed": run_closed, "autodiff": run_auto}
        torch_run = torch_cases.fcnn_classification(params, X, Y, acts, 1e-4)
        if torch_run is not None:
            runners["torch"] = torch_run
        ms = interleaved_medians(runners, rounds=rounds)
        extra = {"torch_ms": ms["torch"], "closed_vs_torch": ms["closed"] / ms["torch"]} if "torch" in ms else {}
        results.append(CaseResult(name + dtype_tag(dtype), ms["closed"], ms["autodiff"], temp_closed, temp_auto,
                                  flops=training_flops(n, dims), extra=extra, dtype=dtype))
    return results
