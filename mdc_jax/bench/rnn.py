"""RNN loss (seed 000 §6.4): closed-form BPTT rule vs `jax.grad` of the plain `lax.scan` reference.

Both sides compute the loss and the parameter gradients (``jax.value_and_grad`` in ``params``).
``extra`` also holds the temp memory when every argument's cotangent is asked for (``Z0``, ``X``,
``Y`` too) and the size of the hidden states ``Z_0..Z_{τ−1}``, the floor for any rule that does not
recompute the forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..reference import rnn as reference
from ..rules import rnn
from . import torch_cases
from .timing import CaseResult, compiled, interleaved_medians

# (name, τ, N, D, H, K): the size, and a seconds-long one for --suite small.
SUITES = {
    "full": [("rnn τ=200 N=128 D=256 H=512 K=256 f32", 200, 128, 256, 512, 256)],
    "small": [("rnn τ=20 N=16 D=32 H=64 K=32 f32", 20, 16, 32, 64, 32)],
}


def training_flops(tau: int, n: int, d: int, h: int, k: int) -> float:
    """FLOPs of the closed-form loss-and-parameter-gradient program: per step, forward Z_{t−1}W,
    X_tU, Z_tV; backward Z_tV again (recomputed), ∇_{O_t}J Vᵀ, Z_tᵀ∇_{O_t}J, Z_{t−1}ᵀ∇_{A_t}J,
    X_tᵀ∇_{A_t}J and ∇_{A_t}J Wᵀ (∇_X J is not asked for)."""
    return 2 * tau * n * (3 * h * h + 2 * d * h + 4 * h * k)


def run_cases(suite: str = "full", rounds: int = 21) -> list[CaseResult]:
    results = []
    for name, tau, n, d, h, k in SUITES[suite]:
        case = reference.rnn_case(0, tau, n, d, h, k, jnp.float32)
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
                 "hidden_states_bytes": tau * n * h * jnp.dtype(jnp.float32).itemsize,
                 "chunk": rnn.chunk_size(tau)}
        results.append(CaseResult(name, ms["closed"], ms["autodiff"], temp_closed, temp_auto,
                                  flops=training_flops(tau, n, d, h, k), extra=extra))
    return results
