"""Per-example clipping (DP-SGD's gradient): closed form vs the plain gradient vs `jax.vmap(jax.grad)`.

Each case times, interleaved in one run:

* ``plain``: ``jax.value_and_grad`` of the closed-form loss (the gradient without clipping);
* ``clipped``: :func:`mdc_jax.per_example.fcnn_clipped_grad` / ``rnn_clipped_grad`` (one backward,
  norms from ``Z`` and ``S``, the clipped mean as the plain gradient's matmul with rescaled rows);
* ``vmap``: ``jax.vmap(jax.grad)`` of the reference on one example at a time, then clipping: the
  way to get per-example gradients without closed forms (``jax_privacy`` clips this way);
* ``dp_step``: a full DP-SGD step with the closed form: clip, Gaussian noise, optax SGD update;
* ``opacus``: Opacus's ghost-clipping DP step on the same MLP in PyTorch, when installed
  (``pip install mdc-jax[bench] opacus``).

The word LM's case (token ids, integer labels, the fused head over a 16k vocabulary) compares the clipped
gradient with the plain fused step: no ``τ·N × K`` logits in either (``logits_bytes`` is their size).

The table's "closed" column is ``clipped`` and "autodiff" is ``vmap``; the other figures are in
each case's ``extra`` (``clipped_vs_plain``, ``temp_vs_plain``, ``dp_step_vs_opacus``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..reference import per_example as ref
from ..reference.fcnn import mlp_case
from ..reference.rnn import rnn_case
from ..rules import fcnn, rnn
from ..rules import per_example as pe
from . import torch_cases
from .timing import CaseResult, compiled, fmt, interleaved_medians

CLIP = 1.0
NOISE = 1.0
FLOAT32_ONLY = ("the clipped gradients accept bfloat16, but no test holds their bfloat16 values to float32's, "
                "and the Opacus peer is float32")

SUITES = {
    "full": {"mlp": [("MLP N=256 784-512-512-10", 256, [784, 512, 512, 10]),
                     ("MLP N=1024 784-512-512-10", 1024, [784, 512, 512, 10])],
             "rnn": [("RNN τ=50 N=64 D=H=256 K=64", 50, 64, 256, 256, 64)],
             "wordlm": [("word LM ids+fused τ=32 N=32 H=256 K=16384", 32, 32, 256, 16384)]},
    "small": {"mlp": [("MLP N=64 64-128-10", 64, [64, 128, 10])],
              "rnn": [("RNN τ=10 N=16 D=H=32 K=16", 10, 16, 32, 32, 16)],
              "wordlm": [("word LM ids+fused τ=6 N=4 H=16 K=600", 6, 4, 16, 600)]},
}


def dp_step(clipped_grad, lr: float = 0.1):
    """One DP-SGD step around a clipped gradient: noise σC/N on the mean (a draw per leaf), optax SGD. ``n`` is
    the first data argument's sample axis (X's rows; the RNN's ``Z0`` rows)."""
    import optax

    opt = optax.sgd(lr)

    def step(params, opt_state, key, *data):
        loss, grads = clipped_grad(params, *data)
        n = data[0].shape[0]
        keys = jax.random.split(key, len(jax.tree.leaves(grads)))
        leaves = [g + (NOISE * CLIP / n) * jax.random.normal(k, g.shape, g.dtype)
                  for g, k in zip(jax.tree.leaves(grads), keys)]
        updates, opt_state = opt.update(jax.tree.unflatten(jax.tree.structure(grads), leaves), opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return opt, step


def _mlp_case(name, n, dims, rounds):
    params, X, Y = mlp_case(0, n, dims, jnp.float32)
    acts = ["tanh"] * (len(dims) - 2)
    plain = jax.value_and_grad(lambda p, X, Y: fcnn.fcnn_classification_loss(p, X, Y, acts))
    clipped = lambda p, X, Y: pe.fcnn_clipped_grad(p, X, Y, acts, clip_norm=CLIP)

    def vmap_clipped(p, X, Y):
        return ref.clipped_from_batch_grads(ref.fcnn_batch_grads(p, X, Y, acts), CLIP)

    opt, step = dp_step(clipped)
    opt_state, key = opt.init(params), jax.random.PRNGKey(0)
    run_plain, temp_plain = compiled(plain, params, X, Y)
    run_clip, temp_clip = compiled(clipped, params, X, Y)
    run_vmap, temp_vmap = compiled(vmap_clipped, params, X, Y)
    run_step, temp_step = compiled(step, params, opt_state, key, X, Y)
    runners = {"plain": run_plain, "clipped": run_clip, "vmap": run_vmap, "dp_step": run_step}
    opacus = torch_cases.opacus_ghost_step(params, X, Y, acts, CLIP, NOISE)
    if opacus is not None:
        runners.update(opacus)
    ms = interleaved_medians(runners, rounds=rounds)
    extra = _extra(ms, temp_plain, temp_clip, temp_step)
    return CaseResult(f"per_example clip {name}", ms["clipped"], ms["vmap"], temp_clip, temp_vmap, extra=extra)


def _rnn_vmap_clipped(p, Z0, X, Y):
    return ref.clipped_from_batch_grads(ref.rnn_batch_grads(p, Z0, X, Y), CLIP)


def _rnn_runs(name, plain, clipped, args, rounds, **extra):
    """Plain step, clipped gradient and `vmap(grad)` + clipping of the reference, compiled and interleaved."""
    run_plain, temp_plain = compiled(plain, *args)
    run_clip, temp_clip = compiled(clipped, *args)
    run_vmap, temp_vmap = compiled(_rnn_vmap_clipped, *args)
    ms = interleaved_medians({"plain": run_plain, "clipped": run_clip, "vmap": run_vmap}, rounds=rounds)
    return CaseResult(f"per_example clip {name}", ms["clipped"], ms["vmap"], temp_clip, temp_vmap,
                      extra={**_extra(ms, temp_plain, temp_clip, None), **extra})


def _rnn_case(name, tau, n, d, h, k, rounds):
    clipped = lambda p, Z0, X, Y: pe.rnn_clipped_grad(p, Z0, X, Y, clip_norm=CLIP)
    return _rnn_runs(name, jax.value_and_grad(rnn.rnn_loss), clipped, rnn_case(0, tau, n, d, h, k, jnp.float32), rounds)


def _wordlm_case(name, tau, n, h, k, rounds):
    """The word LM's shape: token ids in, integer labels out, the fused head (vocabulary blocks of 8192):
    plain fused step, its clipped gradient (the head's Grams in its blocks), and `vmap(grad)` of the reference."""
    params, Z0, _, _ = rnn_case(0, 1, n, k, h, k, jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(1))
    X, Y = (jax.random.randint(key, (tau, n), 0, k, jnp.int32) for key in keys)
    plain = jax.value_and_grad(lambda p, Z0, X, Y: rnn.rnn_loss(p, Z0, X, Y, head="fused"))
    clipped = lambda p, Z0, X, Y: pe.rnn_clipped_grad(p, Z0, X, Y, clip_norm=CLIP, head="fused")
    return _rnn_runs(name, plain, clipped, (params, Z0, X, Y), rounds, logits_bytes=tau * n * k * 4)


def _extra(ms, temp_plain, temp_clip, temp_step):
    extra = {"plain_ms": ms["plain"], "clipped_vs_plain": ms["clipped"] / ms["plain"],
             "vmap_vs_clipped": ms["vmap"] / ms["clipped"], "plain_temp_bytes": temp_plain,
             "temp_vs_plain": None if not temp_plain else temp_clip / temp_plain}
    if "dp_step" in ms:
        extra.update(dp_step_ms=ms["dp_step"], dp_step_temp_bytes=temp_step)
    if "opacus" in ms:
        extra.update(opacus_ms=ms["opacus"], torch_plain_ms=ms["torch_plain"],
                     dp_step_vs_opacus=ms["dp_step"] / ms["opacus"], opacus_vs_torch_plain=ms["opacus"] / ms["torch_plain"])
    return extra


def run_cases(suite: str = "full", rounds: int = 15) -> list[CaseResult]:
    cases = SUITES[suite]
    return ([_mlp_case(*c, rounds) for c in cases["mlp"]] + [_rnn_case(*c, rounds) for c in cases["rnn"]]
            + [_wordlm_case(*c, max(3, rounds // 3)) for c in cases["wordlm"]])


def format_details(results: list[CaseResult]) -> str:
    """The per-example table: clipped vs plain (time, temp memory), vmap vs clipped, DP step vs Opacus."""
    lines = ["| case | plain ms | clipped ms | clipped / plain | temp clipped / plain | vmap+clip ms | vmap / clipped "
             "| DP step ms | Opacus ghost DP step ms | DP step / Opacus |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f = fmt
    for r in results:
        e = r.extra
        lines.append(f"| {r.name} | {f(e['plain_ms'])} | {f(r.closed_ms)} | {f(e['clipped_vs_plain'])} | "
                     f"{f(e['temp_vs_plain'])} | {f(r.autodiff_ms)} | {f(e['vmap_vs_clipped'], '.1f')} | "
                     f"{f(e.get('dp_step_ms'))} | {f(e.get('opacus_ms'))} | {f(e.get('dp_step_vs_opacus'))} |")
    return "\n".join(lines)
