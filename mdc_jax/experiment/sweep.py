"""`mdc-jax sweep`: several experiments, one table.

Each config is run once per point of the grid (the cartesian product of ``--grid key=v1,v2``),
with ``--set`` overrides applied to all. Results go to ``sweep.md`` (a markdown table) and
``sweep.json`` in the output folder, rewritten after every run so an interrupted sweep keeps what
it finished.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from .config import ConfigError, ExperimentConfig, load_config, parse_override
from .trainer import check_new_run_dir, train


def parse_grid(items: list[str]) -> list[list[str]]:
    """``["train.grad=closed,autodiff"]`` → ``[["train.grad=closed", "train.grad=autodiff"]]``."""
    axes, keys = [], set()
    for item in items:
        key, _ = parse_override(item, "--grid")
        if key in keys:
            raise ConfigError(f"--grid {key}: given twice; give all its values in one --grid {key}=V1,V2,...")
        keys.add(key)
        values = item.split("=", 1)[1].split(",")
        if not all(v.strip() for v in values):
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... with non-empty values")
        for v in values:
            parse_override(f"{key}={v.strip()}", "--grid")  # each value is valid YAML
        axes.append([f"{key}={v.strip()}" for v in values])
    return axes


def plan_sweep(configs: list[str], overrides: list[str], grid: list[str]) -> list[tuple[str, list[str], ExperimentConfig]]:
    """``(config path, grid point, resolved config)`` for every run of the sweep, each validated with its
    grid point applied: a key the grid sets need not be in the config (a key missing from every point
    is still refused, naming it)."""
    points = list(itertools.product(*parse_grid(grid))) or [()]
    plan = []
    for path in configs:
        for point in points:
            try:
                plan.append((path, list(point), load_config(path, list(overrides) + list(point))))
            except ConfigError as err:
                raise ConfigError(f"{err} (with --grid {' '.join(point)})" if point else str(err)) from None
    return plan


def run_sweep(configs: list[str], overrides: list[str], grid: list[str], out: str | Path) -> list[dict]:
    out = Path(out)
    check_new_run_dir(out, hint="give a new or empty directory for the sweep's runs and tables")
    plan = plan_sweep(configs, overrides, grid)  # every run's config is checked before any run starts
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (path, point, cfg) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {cfg.name} {' '.join(point)}", flush=True)
        result = train(cfg, out_dir=out / f"{i:02d}-{cfg.name}")
        s = result.summary
        rows.append({"config": str(path), "overrides": list(overrides) + point, "metric": s["primary_metric"],
                     "value": s[s["primary_metric"]], "time_per_step_ms": s.get("time_per_step_ms"),
                     "run_dir": str(result.run_dir)})
        _write(out, rows)
    return rows


def _write(out: Path, rows: list[dict]) -> None:
    (out / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| config | overrides | metric | value | time per step (ms) |", "|---|---|---|---:|---:|"]
    for r in rows:
        tps = "-" if r["time_per_step_ms"] is None else f"{r['time_per_step_ms']:.3f}"
        lines.append(f"| {Path(r['config']).stem} | {' '.join(r['overrides']) or '-'} | {r['metric']} | "
                     f"{r['value']:.4f} | {tps} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
