"""The char-RNN's DP-SGD step beside its peers on the same CPU (issue 23): Opacus's ``DPRNN`` and jax-privacy.

The case is a character-level RNN (seed 000 §6.4, tanh): one-hot inputs ``X = onehot(ids[:-1])`` and targets
``Y = onehot(ids[1:])`` over ``K`` characters (``D = K``), float32, clipping ``C`` and noise ``σ`` of
:mod:`mdc_jax.bench.per_example`. Each case times, interleaved in one run, one DP-SGD step (clipped mean
gradient, Gaussian noise ``σC/N`` on it, SGD with learning rate 0.1):

* ``mdc``: :func:`mdc_jax.per_example.rnn_clipped_grad` (one closed-form backward, norms from the ``τ × τ``
  Grams) in :func:`mdc_jax.bench.per_example.dp_step` (``jax.random`` noise, optax SGD);
* ``vmap``: the same step around ``jax.vmap(jax.grad)`` of the reference loss (the "autodiff" column);
* ``jax_privacy``: jax-privacy 2.0's ``clipped_grad(loss, l2_clip_norm=C, batch_argnums=(1, 2, 3),
  keep_batch_dim=False, normalize_by=N)`` of the same reference loss on one sequence (``vmap`` of
  ``grad``, per-example clipping, the sum ÷ N), in the same step; the time-major ``X``/``Y`` are swapped to
  batch-major inside the jitted step (jax-privacy's batch axis is the first);
* ``opacus``: Opacus 1.6's ``DPRNN`` + ``Linear`` head under ``GradSampleModule`` (per-example gradients
  through hooks; ghost clipping does not cover RNNs) and ``DPOptimizer``, torch on the CPU
  (:func:`mdc_jax.bench.torch_cases.opacus_dprnn`);
* ``torch_plain``: the same torch model's plain SGD step (no hooks, no clipping), for scale.

A peer that is not installed (``pip install mdc-jax[bench]``, ``jax-privacy`` included) leaves its columns
``None``; the case still runs. Each case also records how far the peers' clipped gradients (no noise, the
case's own weights) are from mdc-jax's: ``max_abs_diff_vs_*`` and ``max_rel_diff_vs_*`` (over the five
parameters, the largest ``max|ours − theirs| / max|ours|``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..per_example import rnn_clipped_grad
from ..reference import per_example as ref
from ..reference.rnn import rnn_case, rnn_loss
from . import torch_cases
from .per_example import CLIP, NOISE, dp_step
from .timing import CaseResult, compiled, fmt, interleaved_medians, skipped

SUITES = {
    "full": {"cases": [("char-RNN τ=50 N=64 H=256 K=64", 50, 64, 256, 64)], "rounds": 15},
    "small": {"cases": [("char-RNN τ=4 N=3 H=8 K=5", 4, 3, 8, 5)], "rounds": 2},
}
FLOAT32_ONLY = "a float32 DP-SGD step against float32 peers (jax-privacy, Opacus): no bfloat16 case"
TARGETS = {"opacus_vs_mdc": 5.0, "jax_privacy_vs_mdc": 3.0}  # the peer's step time / mdc-jax's, at least


def char_rnn_case(seed, tau: int, n: int, h: int, k: int, dtype=jnp.float32):
    """``(params, Z0, X, Y, ids)``: :func:`~mdc_jax.reference.rnn.rnn_case`'s weights and ``Z0`` with ``D = K``,
    ``ids`` ``(τ + 1, N)`` uniform over the ``K`` characters, ``X``/``Y`` their one-hot inputs and next-char
    targets ``(τ, N, K)``."""
    params, Z0, _, _ = rnn_case(seed, tau, n, k, h, k, dtype)
    ids = np.random.default_rng(seed).integers(0, k, (tau + 1, n))
    return params, Z0, jax.nn.one_hot(ids[:-1], k, dtype=dtype), jax.nn.one_hot(ids[1:], k, dtype=dtype), ids


def _one_sequence(params, z, x, y):
    """``ℓ_i``: the reference loss of one sequence (``z`` ``(H,)``, ``x`` ``(τ, D)``, ``y`` ``(τ, K)``)."""
    return rnn_loss(params, z[None], x[:, None], y[:, None])


def jax_privacy_clipped_grad(clip_norm: float, n: int):
    """``(params, Z0, X, Y) -> (J, (1/N) Σ_i min(1, C/‖g_i‖) g_i)`` by jax-privacy's ``clipped_grad`` (the
    signature and result of :func:`mdc_jax.per_example.rnn_clipped_grad`), or None without jax-privacy."""
    try:
        import jax_privacy
    except ImportError as err:
        skipped("jax-privacy", f"it is not importable ({err}); its columns stay empty (pip install mdc-jax[bench]).")
        return None
    clipped = jax_privacy.clipped_grad(_one_sequence, l2_clip_norm=clip_norm, batch_argnums=(1, 2, 3), keep_batch_dim=False,
                                       normalize_by=n, return_values=True)

    def fn(params, Z0, X, Y):
        grads, aux = clipped(params, Z0, jnp.swapaxes(X, 0, 1), jnp.swapaxes(Y, 0, 1))
        return jnp.mean(aux.values), grads

    return fn


def max_diffs(ours, theirs) -> tuple[float, float]:
    """``(max |ours − theirs|, max over leaves of max|ours − theirs| / max|ours|)`` of two gradient trees."""
    a, b = jax.tree.leaves(ours), jax.tree.leaves(theirs)
    assert len(a) == len(b) and all(np.shape(x) == np.shape(y) for x, y in zip(a, b))
    abs_ = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(a, b)]
    rel = [d / max(float(np.max(np.abs(np.asarray(x)))), np.finfo(np.float64).tiny) for d, x in zip(abs_, a)]
    return max(abs_), max(rel)


def _case(name, tau, n, h, k, rounds):
    params, Z0, X, Y, ids = char_rnn_case(0, tau, n, h, k)
    clipped = lambda p, Z0, X, Y: rnn_clipped_grad(p, Z0, X, Y, clip_norm=CLIP)
    per_example = jax.vmap(jax.value_and_grad(_one_sequence), in_axes=(None, 0, 1, 1))

    def vmap_clipped(p, Z0, X, Y):
        losses, batch_grads = per_example(p, Z0, X, Y)
        return jnp.mean(losses), ref.clipped_from_batch_grads(batch_grads, CLIP)

    programs = {"mdc": clipped, "vmap": vmap_clipped}
    jp = jax_privacy_clipped_grad(CLIP, n)
    if jp is not None:
        programs["jax_privacy"] = jp
    key = jax.random.PRNGKey(0)
    runners, temps = {}, {}
    for label, fn in programs.items():
        opt, step = dp_step(fn)
        runners[label], temps[label] = compiled(step, params, opt.init(params), key, Z0, X, Y)
    # the peers' clipped gradients without noise (vmap(grad)'s against the closed form: tests/test_per_example.py)
    grads = {} if jp is None else {"jax_privacy": jax.jit(jp)(params, Z0, X, Y)[1]}
    torch = torch_cases.opacus_dprnn(params, Z0, X, ids[1:], CLIP, NOISE)
    if torch is not None:
        grads["opacus"] = torch["clipped_grad"]()  # before any step changes the weights
        runners.update(opacus=torch["opacus"], torch_plain=torch["torch_plain"])
    if grads:
        grads["mdc"] = jax.jit(clipped)(params, Z0, X, Y)[1]
    ms = interleaved_medians(runners, rounds=rounds)
    extra = {"mdc_ms": ms["mdc"], "vmap_ms": ms["vmap"], "jax_privacy_ms": ms.get("jax_privacy"),
             "opacus_ms": ms.get("opacus"), "torch_plain_ms": ms.get("torch_plain"),
             "mdc_temp_bytes": temps["mdc"], "jax_privacy_temp_bytes": temps.get("jax_privacy"),
             "opacus_vs_torch_plain": ms["opacus"] / ms["torch_plain"] if "opacus" in ms else None}
    for peer in ("jax_privacy", "opacus"):
        d = max_diffs(grads["mdc"], grads[peer]) if peer in grads else (None, None)
        extra[f"max_abs_diff_vs_{peer}"], extra[f"max_rel_diff_vs_{peer}"] = d
    for what, bound in TARGETS.items():
        peer_ms = ms.get(what.removesuffix("_vs_mdc"))
        extra[what] = None if peer_ms is None else peer_ms / ms["mdc"]
        extra[f"{what}_target_met"] = None if peer_ms is None else extra[what] >= bound
    return CaseResult(f"dp_peers DP step {name}", ms["mdc"], ms["vmap"], temps["mdc"], temps["vmap"], extra=extra)


def run_cases(suite: str = "full", rounds: int | None = None) -> list[CaseResult]:
    s = SUITES[suite]
    return [_case(*c, s["rounds"] if rounds is None else rounds) for c in s["cases"]]


def format_details(results: list[CaseResult]) -> str:
    """The DP step against its peers: times, the peers' ratios to mdc-jax (targets ≥ 5× Opacus, ≥ 3×
    jax-privacy) and the clipped gradients' agreement."""
    lines = ["| case | mdc-jax DP step ms | vmap DP step ms | jax-privacy DP step ms | Opacus DPRNN DP step ms "
             "| torch plain step ms | jax-privacy / mdc-jax (≥ 3) | Opacus / mdc-jax (≥ 5) | max rel diff vs jax-privacy "
             "| vs Opacus |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        e = r.extra
        lines.append(f"| {r.name} | {fmt(e['mdc_ms'])} | {fmt(e['vmap_ms'])} | {fmt(e['jax_privacy_ms'])} | "
                     f"{fmt(e['opacus_ms'])} | {fmt(e['torch_plain_ms'])} | {fmt(e['jax_privacy_vs_mdc'], '.1f')} | "
                     f"{fmt(e['opacus_vs_mdc'], '.1f')} | {fmt(e['max_rel_diff_vs_jax_privacy'], '.0e')} | "
                     f"{fmt(e['max_rel_diff_vs_opacus'], '.0e')} |")
    return "\n".join(lines)
