"""Timing and memory measurement shared by every benchmark case.

Timings are interleaved: each round runs every implementation once, in a rotating order, so that
a noisy neighbour slows all of them alike; the figure reported is the median over rounds, after
compilation and warm-up. Memory is XLA's own account of the compiled program
(`memory_analysis().temp_size_in_bytes`), not a process measurement.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass
class CaseResult:
    """One benchmark case: closed-form rule vs `jax.grad` of the reference."""

    name: str
    closed_ms: float
    autodiff_ms: float
    closed_temp_bytes: int | None = None
    autodiff_temp_bytes: int | None = None
    flops: float | None = None  # per call of the closed-form program, where known
    extra: dict = dataclasses.field(default_factory=dict)
    dtype: str | None = None  # the case's arrays; None: the run's --dtype (filled in by mdc_jax.bench.main)

    @property
    def ratio(self) -> float:
        """closed / autodiff median time: < 1 means the closed form is faster."""
        return self.closed_ms / self.autodiff_ms

    @property
    def temp_ratio(self) -> float | None:
        if self.closed_temp_bytes is None or not self.autodiff_temp_bytes:
            return None
        return self.closed_temp_bytes / self.autodiff_temp_bytes

    @property
    def closed_gflops(self) -> float | None:
        return None if self.flops is None else self.flops / (self.closed_ms * 1e6)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(ratio=self.ratio, temp_ratio=self.temp_ratio, closed_gflops=self.closed_gflops)
        return d


def interleaved_medians(fns: dict[str, Callable[[], object]], rounds: int = 21,
                        warmup: int = 2, min_seconds: float = 0.0) -> dict[str, float]:
    """Median wall time in milliseconds of each zero-argument callable, run interleaved.

    Each callable must run already-compiled code; its result is blocked on. The order rotates
    every round. Runs at least `rounds` rounds and, if given, until `min_seconds` have passed.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            jax.block_until_ready(fns[name]())
    times: dict[str, list[float]] = {name: [] for name in names}
    start, r = time.perf_counter(), 0
    while r < rounds or time.perf_counter() - start < min_seconds:
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[name]())
            times[name].append(time.perf_counter() - t0)
        r += 1
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def compiled(fn: Callable, *args):
    """`jax.jit(fn)` compiled for `args`: (callable with args bound, temp bytes)."""
    exe = jax.jit(fn).lower(*args).compile()
    analysis = exe.memory_analysis()
    temp = None if analysis is None else int(analysis.temp_size_in_bytes)
    return (lambda: exe(*args)), temp


def matmul_gflops(n: int = 2048, dtype=jnp.float32, rounds: int = 11) -> float:
    """Achieved GFLOP/s of an n×n @ n×n matmul on the default device: the roofline we compare to."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    run, _ = compiled(jnp.matmul, a, b)
    ms = interleaved_medians({"matmul": run}, rounds=rounds)["matmul"]
    return 2 * n**3 / (ms * 1e6)


def format_table(results: list[CaseResult], matmul: float | None = None) -> str:
    """A markdown table of results."""
    lines = ["| case | closed ms | autodiff ms | time ratio | closed temp MiB | autodiff temp MiB | temp ratio | GFLOP/s "
             "| torch ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"
    for r in results:
        tr = "-" if r.temp_ratio is None else f"{r.temp_ratio:.2f}"
        gf = "-" if r.closed_gflops is None else f"{r.closed_gflops:.1f}"
        if r.closed_gflops is not None and matmul:
            gf += f" ({100 * r.closed_gflops / matmul:.0f}% of matmul)"
        torch = fmt(r.extra.get("torch_ms"))  # "-" where torch is not installed
        lines.append(f"| {r.name} | {r.closed_ms:.2f} | {r.autodiff_ms:.2f} | {r.ratio:.2f} | "
                     f"{mib(r.closed_temp_bytes)} | {mib(r.autodiff_temp_bytes)} | {tr} | {gf} | {torch} |")
    return "\n".join(lines)


def case_dtype(family: str, dtype: str, supported: tuple[str, ...]):
    """``dtype`` as a ``jnp.dtype`` for a family whose cases run in ``supported`` dtypes; a ValueError naming them
    otherwise."""
    if dtype not in supported:
        raise ValueError(f"{family} bench: dtype must be one of {', '.join(supported)}; got {dtype!r}.")
    return jnp.dtype(dtype)


DTYPE_TAGS = {"float32": "f32", "bfloat16": "bf16"}  # how case names spell a dtype


def dtype_tag(dtype: str) -> str:
    """A suffix for case names that never named a dtype: none for float32 (the names as they were), `` bf16``."""
    return "" if dtype == "float32" else f" {DTYPE_TAGS[dtype]}"


_SKIPPED: set[str] = set()


def skipped(what: str, why: str) -> None:
    """One line on stderr, once per process for each ``what``: a peer this run leaves out, and why."""
    if what not in _SKIPPED:
        _SKIPPED.add(what)
        print(f"mdc-jax bench: skipping {what}: {why}", file=sys.stderr, flush=True)


def fmt(x, spec: str = ".2f") -> str:
    """A table cell: ``x`` formatted, or ``-`` for a figure that was not measured."""
    return "-" if x is None else format(x, spec)
