"""Fused linear + softmax cross-entropy head (issue 12): the blocked rule vs the plain head and optax.

Each case times, interleaved in one run, the loss and its gradient with respect to ``(Z, W, b)``
(float32, or bfloat16 with ``--dtype bfloat16``; integer labels, ``reduction="mean"``, each ``jax.jit``-compiled):

* ``fused``: ``jax.value_and_grad`` of :func:`mdc_jax.linear_softmax_cross_entropy` with its
  default blocks (the N × K logits are never held);
* ``autodiff``: ``jax.value_and_grad`` of the plain head in
  :func:`mdc_jax.reference.linear_ce.linear_softmax_cross_entropy` (``logits = Z W + b``,
  ``log_softmax``, mean negative log-likelihood);
* ``optax``: ``jax.value_and_grad`` of ``optax.softmax_cross_entropy_with_integer_labels(Z W + b,
  labels).mean()``, when optax is installed (``pip install mdc-jax[train]``).

The table's "closed" column is ``fused`` and "autodiff" is ``autodiff``; the optax figures, the
temp memory ratio and the agreement of the three results are in each case's ``extra``. The issue's
targets: fused temp memory ≤ 1/16 of autodiff's, fused time ≤ 1.15× autodiff's.
"""

from __future__ import annotations

import jax

from ..reference import linear_ce as reference
from ..rules import linear_ce
from ..testing import rel_err
from .timing import CaseResult, case_dtype, compiled, dtype_tag, fmt, interleaved_medians

# (name, N, d, K, rounds, warmup): the issue's two sizes, and a seconds-long one for --suite small.
# One call of the larger full case takes tens of seconds on a 2-core CPU, hence its 3 rounds.
SUITES = {
    "full": [("linear_ce N=4096 d=512 K=32768", 4096, 512, 32768, 7, 1),
             ("linear_ce N=8192 d=1024 K=65536", 8192, 1024, 65536, 3, 1)],
    "small": [("linear_ce N=512 d=128 K=4096", 512, 128, 4096, 7, 2)],
}
DTYPES = ("float32", "bfloat16")  # bfloat16: tests/test_linear_ce.py (float32 accumulation, bfloat16 gradients)
TEMP_TARGET = 1 / 16  # fused temp memory ≤ 1/16 of autodiff's
TIME_TARGET = 1.15  # fused time ≤ 1.15× autodiff's


def training_flops(n: int, d: int, k: int) -> float:
    """Useful FLOPs of one loss-and-gradient evaluation: the logits Z W, then E Wᵀ and Zᵀ E (2NdK each).
    The fused rule also recomputes the logits in its backward (a fourth 2NdK), not counted here."""
    return 3 * 2 * n * d * k


def _optax_head():
    try:
        import optax
    except ImportError:
        return None
    return lambda Z, W, b, y: optax.softmax_cross_entropy_with_integer_labels(Z @ W + b[None, :], y).mean()


def _case(name, n, d, k, rounds, warmup, dtype="float32"):
    Z, W, b, labels = reference.linear_ce_case(0, n, d, k, case_dtype("linear_ce", dtype, DTYPES))
    heads = {"fused": lambda Z, W, b, y: linear_ce.linear_softmax_cross_entropy(Z, W, b, y),
             "autodiff": lambda Z, W, b, y: reference.linear_softmax_cross_entropy(Z, W, b, y)}
    optax_head = _optax_head()
    if optax_head is not None:
        heads["optax"] = optax_head
    runners, temps = {}, {}
    for key, head in heads.items():
        runners[key], temps[key] = compiled(jax.value_and_grad(head, argnums=(0, 1, 2)), Z, W, b, labels)
    # one call each (compiles nothing, checks agreement with the plain head, and warms up)
    outs = {key: jax.block_until_ready(run()) for key, run in runners.items()}
    agreement = {f"{key}_rel_err_vs_autodiff": rel_err(out, outs["autodiff"]) for key, out in outs.items()
                 if key != "autodiff"}
    del outs
    ms = interleaved_medians(runners, rounds=rounds, warmup=warmup)
    temp_ratio = None if not temps["autodiff"] else temps["fused"] / temps["autodiff"]
    extra = {"rounds": rounds, "fused_vs_autodiff": ms["fused"] / ms["autodiff"],
             "time_target_met": ms["fused"] / ms["autodiff"] <= TIME_TARGET,
             "temp_target_met": None if temp_ratio is None else temp_ratio <= TEMP_TARGET,
             "block_size": linear_ce.default_blocks(n, k), **agreement}
    if "optax" in ms:
        extra.update(optax_ms=ms["optax"], optax_temp_bytes=temps["optax"], fused_vs_optax=ms["fused"] / ms["optax"])
    return CaseResult(name + dtype_tag(dtype), ms["fused"], ms["autodiff"], temps["fused"], temps["autodiff"],
                      flops=training_flops(n, d, k), extra=extra, dtype=dtype)


def run_cases(suite: str = "full", rounds: int | None = None, dtype: str = "float32") -> list[CaseResult]:
    """Every case of the suite in ``dtype`` (float32 or bfloat16: ``Z``, ``W``, ``b``; integer labels);
    ``rounds`` overrides each case's own number of timed rounds."""
    return [_case(name, n, d, k, rounds or r, w, dtype) for name, n, d, k, r, w in SUITES[suite]]


def format_details(results: list[CaseResult]) -> str:
    """The fused-head table: fused vs the plain head and optax (time and XLA temp memory)."""
    lines = ["| case | rounds | fused ms | autodiff ms | optax ms | fused / autodiff | fused / optax | fused temp MiB "
             "| autodiff temp MiB | optax temp MiB | temp fused / autodiff |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f = fmt
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"
    for r in results:
        e = r.extra
        lines.append(f"| {r.name} | {e['rounds']} | {f(r.closed_ms)} | {f(r.autodiff_ms)} | {f(e.get('optax_ms'))} | "
                     f"{f(e['fused_vs_autodiff'])} | {f(e.get('fused_vs_optax'))} | {mib(r.closed_temp_bytes)} | "
                     f"{mib(r.autodiff_temp_bytes)} | {mib(e.get('optax_temp_bytes'))} | {f(r.temp_ratio, '.4f')} |")
    return "\n".join(lines)
