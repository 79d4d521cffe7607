"""Benchmarks: each closed-form rule family against `jax.grad` of its reference.

A benchmark, never a test: figures depend on the machine. Every case module has
``run_cases(suite) -> list[CaseResult]``; :func:`main` runs them, prints a markdown table and
writes JSON (fields per case: ``name``, ``closed_ms``, ``autodiff_ms``, ``ratio``,
``closed_temp_bytes``, ``autodiff_temp_bytes``, ...).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import sys

CASE_MODULES = ("fcnn", "rnn", "logistic", "per_example", "linear_ce", "curvature", "dp_peers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdc-jax bench",
                                     description="closed-form rules vs jax.grad: time and XLA temp memory")
    parser.add_argument("--suite", choices=["small", "full"], default="full")
    parser.add_argument("--only", nargs="*", choices=CASE_MODULES, default=list(CASE_MODULES),
                        help="rule families to run (default: all)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)  # float64 cases; float32 cases create float32 arrays
    from .timing import format_table, matmul_gflops
    from .torch_cases import configure_threads

    configure_threads()

    results, details = [], []
    for i, family in enumerate(args.only, 1):
        print(f"[{i}/{len(args.only)}] {family} ({args.suite})", file=sys.stderr, flush=True)
        module = importlib.import_module(f"{__name__}.{family}")
        cases = module.run_cases(args.suite)
        results.extend(cases)
        if hasattr(module, "format_details"):  # a family with figures beyond closed vs autodiff
            details.append(module.format_details(cases))
    matmul = matmul_gflops(2048 if args.suite == "full" else 512)
    header = (f"{datetime.date.today()} · jax {jax.__version__} · {jax.devices()[0].device_kind} · "
              f"{platform.processor() or platform.machine()} · suite {args.suite} · "
              f"matmul roofline {matmul:.1f} GFLOP/s")
    print(header)
    print(format_table(results, matmul))
    for table in details:
        print()
        print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "matmul_gflops": matmul, "cases": [r.as_dict() for r in results]}, f, indent=2)
    return 0
