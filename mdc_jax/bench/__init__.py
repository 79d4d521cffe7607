"""Benchmarks: each closed-form rule family against `jax.grad` of its reference.

A benchmark, never a test: figures depend on the machine. Every case module has
``run_cases(suite) -> list[CaseResult]``; :func:`main` runs them, prints a markdown table and
writes JSON (fields per case: ``name``, ``dtype``, ``closed_ms``, ``autodiff_ms``, ``ratio``,
``closed_temp_bytes``, ``autodiff_temp_bytes``, ...). The JSON is rewritten after each family
(``"complete": false`` until the last), so a run cut short keeps the families it finished.

``--dtype bfloat16`` runs the families whose module lists it in ``DTYPES`` (``run_cases(suite,
dtype=...)``); the others are skipped with their module's ``FLOAT32_ONLY`` reason, printed and in the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys

CASE_MODULES = ("fcnn", "rnn", "logistic", "per_example", "linear_ce", "curvature", "dp_peers")
DTYPES = ("float32", "bfloat16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mdc-jax bench",
                                     description="closed-form rules vs jax.grad: time and XLA temp memory")
    parser.add_argument("--suite", choices=["small", "full"], default="full")
    parser.add_argument("--only", nargs="*", choices=CASE_MODULES, default=list(CASE_MODULES),
                        help="rule families to run, in this order (default: all)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="the cases' dtype (default float32; the logistic fits stay float64); bfloat16 runs the "
                             "families that support it and says why it skips the others")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # float64 cases; float32 cases create float32 arrays
    from .timing import format_table, matmul_gflops
    from .torch_cases import configure_threads

    configure_threads()

    # the roofline first, so that the JSON of a run cut short has its header
    matmul = matmul_gflops(2048 if args.suite == "full" else 512, jnp.dtype(args.dtype))
    device = jax.devices()[0]
    header = (f"{datetime.date.today()} · jax {jax.__version__} · {device.platform} {device.device_kind} · "
              f"{platform.processor() or platform.machine()} · suite {args.suite} · dtype {args.dtype} · "
              f"{args.dtype} matmul roofline {matmul:.1f} GFLOP/s")
    results, details, skipped = [], [], {}

    def write(complete: bool) -> None:
        if not args.json:
            return
        data = {"header": header, "suite": args.suite, "dtype": args.dtype, "platform": device.platform,
                "device_kind": device.device_kind, "matmul_gflops": matmul, "families": args.only,
                "skipped_families": skipped, "complete": complete, "cases": [r.as_dict() for r in results]}
        with open(args.json + ".tmp", "w") as f:  # then renamed: a run killed mid-write leaves the last whole file
            json.dump(data, f, indent=2)
        os.replace(args.json + ".tmp", args.json)

    for i, family in enumerate(args.only, 1):
        module = importlib.import_module(f"{__name__}.{family}")
        if args.dtype not in getattr(module, "DTYPES", ("float32",)):  # a family without DTYPES is float32 only
            skipped[family] = getattr(module, "FLOAT32_ONLY", "no bfloat16 case")
            print(f"[{i}/{len(args.only)}] {family}: skipped in {args.dtype}: {skipped[family]}", file=sys.stderr,
                  flush=True)
            continue
        print(f"[{i}/{len(args.only)}] {family} ({args.suite}, {args.dtype})", file=sys.stderr, flush=True)
        cases = module.run_cases(args.suite, **({} if args.dtype == "float32" else {"dtype": args.dtype}))
        for r in cases:
            r.dtype = r.dtype or args.dtype
        results.extend(cases)
        if hasattr(module, "format_details"):  # a family with figures beyond closed vs autodiff
            details.append(module.format_details(cases))
        write(complete=False)
    print(header)
    print(format_table(results, matmul))
    for table in details:
        print()
        print(table)
    for family, why in skipped.items():
        print(f"\nnot run in {args.dtype}: {family}: {why}")
    write(complete=True)
    return 0
