"""Checks every registered rule against autodiff and finite differences (`mdc-jax gradcheck`)."""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp

from .registry import get_rule, list_rules
from .testing import check_vjp


@dataclasses.dataclass
class GradcheckRow:
    rule: str
    reference: str
    seed: int
    dtype: str
    max_rel_err: float
    max_fd_rel_err: float | None
    passed: bool
    error: str | None = None


def run_gradcheck(names: list[str] | None = None, dtype: str = "float64", seeds: int = 3,
                  finite_differences: bool = True, progress=None) -> list[GradcheckRow]:
    """Runs :func:`mdc_jax.testing.check_vjp` on each selected rule for ``seeds`` random inputs.

    float64 needs ``jax_enable_x64`` (the CLI turns it on). A rule that raises is reported as failed.
    """
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("gradcheck in float64 needs jax_enable_x64; the `mdc-jax gradcheck` command enables it.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"run_gradcheck: seeds must be an int >= 1 (random inputs per rule); got {seeds!r}.")
    specs = list_rules() if not names else [get_rule(n) for n in names]
    rows = []
    for i, spec in enumerate(specs, 1):
        if progress:
            progress(f"[{i}/{len(specs)}] {spec.name}")
        for seed in range(seeds):
            try:
                args = spec.sample(jax.random.PRNGKey(seed), jnp.dtype(dtype))
                report = check_vjp(spec.rule, spec.reference, args, argnums=spec.argnums,
                                   rtol=spec.rtol.get(dtype), fd_rtol=spec.fd_rtol,
                                   finite_differences=finite_differences and dtype == "float64", seed=seed)
                rows.append(GradcheckRow(spec.name, spec.reference_name, seed, dtype, report.max_rel_err,
                                         report.max_fd_rel_err, report.passed))
            except Exception as err:  # a crashing rule is a failing rule, reported with its error
                rows.append(GradcheckRow(spec.name, spec.reference_name, seed, dtype, float("nan"), None, False,
                                         f"{type(err).__name__}: {err}"))
    return rows


def format_rows(rows: list[GradcheckRow]) -> str:
    lines = [f"{'rule':32} {'reference':48} {'seed':>4} {'max rel err':>12} {'fd rel err':>11}  status"]
    for r in rows:
        fd = "-" if r.max_fd_rel_err is None else f"{r.max_fd_rel_err:.2e}"
        status = "ok" if r.passed else ("ERROR " + r.error if r.error else "FAIL")
        lines.append(f"{r.rule:32} {r.reference:48} {r.seed:>4} {r.max_rel_err:>12.2e} {fd:>11}  {status}")
    failed = sum(not r.passed for r in rows)
    lines.append(f"gradcheck: {len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
