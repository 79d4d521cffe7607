"""Learning curves from run directories: a metric against steps and against training seconds.

Every evaluation record of a run's ``metrics.jsonl`` holds the step, the seconds spent in training steps so
far (``time_s``: evaluation and checkpoints excluded) and the held-out metrics. These functions read them
back, find where a run first reaches a target, and draw several runs side by side: the comparisons of
optimizers in ``scripts/second_order.py`` are made of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .run_dir import read_metrics


class Curve(NamedTuple):
    """One run's metric at each evaluation: ``steps[k]``, ``seconds[k]`` (training time so far), ``values[k]``."""

    steps: list[int]
    seconds: list[float]
    values: list[float]


def read_curve(run_dir: str | Path, metric: str) -> Curve:
    """``metric`` at every evaluation of the run in ``run_dir`` (records without ``time_s`` are refused)."""
    points = []
    for _, record in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if record is None or not isinstance(record.get("eval"), dict) or metric not in record["eval"]:
            continue
        if "time_s" not in record:
            raise ValueError(f"{run_dir}: the evaluation record of step {record['step']} has no time_s (a run "
                             f"from an mdc-jax without it); train it again")
        points.append((record["step"], float(record["time_s"]), float(record["eval"][metric])))
    if not points:
        raise ValueError(f"{run_dir}: no evaluation record holds {metric!r}")
    steps, seconds, values = zip(*points)
    return Curve(list(steps), list(seconds), list(values))


def first_reaching(curve: Curve, target: float, lower_is_better: bool) -> tuple[int, float] | None:
    """``(step, seconds)`` of the first evaluation at or better than ``target``; ``None`` if none is."""
    for step, seconds, value in zip(*curve):
        if (value <= target) if lower_is_better else (value >= target):
            return step, seconds
    return None


def plot_curves(curves: Mapping[str, Curve], metric: str, path: str | Path, title: str, log_y: bool = False) -> None:
    """Two panels, ``metric`` against steps and against training seconds, one line per run, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    try:
        for label, curve in curves.items():
            axes[0].plot(curve.steps, curve.values, label=label)
            axes[1].plot(curve.seconds, curve.values, label=label)
        axes[1].set_xscale("log")  # methods whose steps differ in cost by 100× share the panel
        axes[1].xaxis.set_minor_formatter(NullFormatter())  # decades only: no crowded labels
        for ax, xlabel in zip(axes, ("step", "training seconds (log scale)")):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if log_y:
                ax.set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def write_json(path: str | Path, payload) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")
