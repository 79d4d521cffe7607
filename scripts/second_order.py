"""The second-order experiments of issue 22: Adam (best of a learning-rate grid, run as a sweep) against
``kfac`` and ``ggn_cg`` on the same data, batch, precision and budget; curves against steps and seconds.

Usage (each writes ``<out>/<experiment>/``: the runs, ``results.json``, ``results.md`` and ``curves.png``)::

    python scripts/second_order.py autoencoder --out runs/second_order
    python scripts/second_order.py digits --out runs/second_order
    python scripts/second_order.py temporal_order --seq-len 50 100 --seeds 0 1 2 --out runs/second_order

``--set KEY=VALUE`` applies to every run (e.g. ``--set train.steps=200`` for a quick look). The configs and
the grids below are the whole comparison: nothing is tuned per seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from mdc_jax.experiment.config import load_config
from mdc_jax.experiment.curves import first_reaching, plot_curves, read_curve, write_json
from mdc_jax.experiment.models import find_config
from mdc_jax.experiment.sweep import run_sweep
from mdc_jax.experiment.trainer import train

# Adam's learning-rate grids (five values each, a factor ~3 apart, centred on the configs' defaults).
EXPERIMENTS = {
    "autoencoder": {"adam": "autoencoder_digits", "grid": "1.0e-4,3.0e-4,1.0e-3,3.0e-3,1.0e-2",
                    "others": {"kfac": "autoencoder_digits_kfac", "ggn_cg": "autoencoder_digits_ggn_cg"},
                    "metric": "train_error", "lower": True},
    "digits": {"adam": "fcnn_classification_digits", "grid": "3.0e-4,1.0e-3,3.0e-3,1.0e-2,3.0e-2",
               "others": {"kfac": "fcnn_classification_digits_kfac", "ggn_cg": "fcnn_classification_digits_ggn_cg"},
               "metric": "test_accuracy", "lower": False},
    "temporal_order": {"adam": "temporal_order_adam", "grid": "1.0e-4,3.0e-4,1.0e-3,3.0e-3,1.0e-2",
                       "others": {"ggn_cg": "temporal_order_ggn_cg", "kfac": "temporal_order_kfac"},
                       "metric": "test_accuracy", "lower": False, "solved": 0.99, "budget_s": 45.0},
}


def best_of_grid(exp: dict, out: Path, overrides: list[str]) -> tuple[str, dict]:
    """Adam over its learning-rate grid, as ``mdc-jax sweep`` runs it; the best final metric wins."""
    rows = run_sweep([str(find_config(exp["adam"]))], overrides, [f"optimizer.learning_rate={exp['grid']}"], out)
    pick = min if exp["lower"] else max
    best = pick(rows, key=lambda r: r["value"])
    return best["overrides"][-1], {r["overrides"][-1]: {"final": r["value"], "run_dir": r["run_dir"]} for r in rows}


def run(config: str, out: Path, overrides: list[str]) -> Path:
    return train(load_config(find_config(config), overrides), out_dir=out).run_dir


def compare(name: str, out: Path, overrides: list[str]) -> dict:
    """Adam's best run sets the target (its final metric); each method's first step and second reaching it."""
    exp, out = EXPERIMENTS[name], out / name
    best, grid = best_of_grid(exp, out / "adam_grid", overrides)
    curves = {f"adam ({best.split('=')[1]})": read_curve(grid[best]["run_dir"], exp["metric"])}
    for label, config in exp["others"].items():
        curves[label] = read_curve(run(config, out / label, overrides), exp["metric"])
    adam = next(iter(curves.values()))
    target = adam.values[-1]
    results = {"metric": exp["metric"], "target": target, "adam_grid": grid, "adam_best": best, "methods": {}}
    for label, curve in curves.items():
        hit = first_reaching(curve, target, exp["lower"])
        results["methods"][label] = {
            "final": curve.values[-1], "steps": curve.steps[-1], "seconds": curve.seconds[-1],
            "reached_at_step": hit and hit[0], "reached_at_seconds": hit and hit[1],
            "step_fraction_of_adam": hit and hit[0] / adam.steps[-1],
            "time_fraction_of_adam": hit and hit[1] / adam.seconds[-1]}
    plot_curves(curves, exp["metric"], out / "curves.png", f"{name}: {exp['metric']} (Adam: best of its grid)",
                log_y=exp["lower"])
    write_json(out / "results.json", results)
    _table(out / "results.md", results)
    return results


def _cut(curve, seconds: float):
    """``curve`` up to ``seconds`` of training time (its evaluations with ``time_s <= seconds``)."""
    keep = sum(t <= seconds for t in curve.seconds)
    return type(curve)(curve.steps[:keep], curve.seconds[:keep], curve.values[:keep])


def _at_length(config: str, T: int) -> list[str]:
    """The configs' ``train.steps`` and ``eval_every`` are sized for ``T = 50``; a step costs ~``T/50`` as
    much at length ``T`` (the scans), so both scale by ``50/T`` (one checkpoint, at the end)."""
    t = load_config(find_config(config)).train
    steps, every = max(1, round(t.steps * 50 / T)), max(1, round(t.eval_every * 50 / T))
    return [f"model.seq_len={T}", f"train.steps={steps}", f"train.eval_every={every}", f"train.checkpoint_every={steps}"]


def temporal_order(out: Path, overrides: list[str], seq_lens: list[int], seeds: list[int]) -> dict:
    """Success rates over seeds at each ``T`` within the same budget of training seconds (``budget_s``, the
    records' ``time_s``: evaluation and checkpoints excluded) for every method: Adam at the best learning rate
    of its grid (chosen on the first seed, by the held-out accuracy at the budget; that grid run is its
    first-seed run), and each second-order method. Every curve is cut at the budget; a run succeeds when its
    last held-out accuracy within the budget is ``>= solved``."""
    exp, results = EXPERIMENTS["temporal_order"], {}
    budget, solved = exp["budget_s"], exp["solved"]
    for T in seq_lens:
        where = out / "temporal_order" / f"T{T}"
        adam_base = [*overrides, *_at_length(exp["adam"], T)]
        _, grid = best_of_grid(exp, where / "adam_grid", [*adam_base, f"train.seed={seeds[0]}"])
        cut = {lr: _cut(read_curve(g["run_dir"], exp["metric"]), budget) for lr, g in grid.items()}
        for lr, g in grid.items():
            g["at_budget"] = cut[lr].values[-1]
        best = max(cut, key=lambda lr: cut[lr].values[-1])  # first of equals: the grid's order
        methods = {"adam": (exp["adam"], [best]), **{k: (c, []) for k, c in exp["others"].items()}}
        row, curves = {"budget_s": budget, "adam_best": best, "adam_grid": grid}, {}
        for label, (config, extra) in methods.items():
            finals, seconds, reached, dirs = [], [], [], []
            for seed in seeds:
                if label == "adam" and seed == seeds[0]:
                    run_dir = Path(grid[best]["run_dir"])
                else:
                    run_dir = run(str(find_config(config)), where / f"{label}-seed{seed}",
                                  [*overrides, *_at_length(config, T), *extra, f"train.seed={seed}"])
                curve = _cut(read_curve(run_dir, exp["metric"]), budget)
                curves.setdefault(f"adam ({best.split('=')[1]})" if label == "adam" else label, curve)
                hit = first_reaching(curve, solved, lower_is_better=False)
                finals.append(curve.values[-1])
                seconds.append(curve.seconds[-1])
                reached.append(hit and hit[1])
                dirs.append(str(run_dir))
            hits = [t for t in reached if t is not None]
            row[label] = {"final_accuracy": finals, "solved": sum(a >= solved for a in finals), "seeds": len(seeds),
                          "median_seconds": statistics.median(seconds), "reached_solved_at_seconds": reached,
                          "median_seconds_to_solved": statistics.median(hits) if hits else None, "run_dirs": dirs}
        plot_curves(curves, exp["metric"], where / "curves.png",
                    f"temporal order, T = {T} (seed {seeds[0]}; cut at {budget:g} s of training)")
        results[f"T{T}"] = row
        write_json(out / "temporal_order" / "results.json", results)
    return results


def _table(path: Path, r: dict) -> None:
    lines = [f"target: {r['metric']} {r['target']:.4g} (Adam's best, {r['adam_best']})", "",
             "| method | final | steps | seconds | reached at step | reached at s | steps / Adam's | time / Adam's |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda x, f: "-" if x is None else format(x, f)
    for label, m in r["methods"].items():
        lines.append(f"| {label} | {m['final']:.4g} | {m['steps']} | {m['seconds']:.1f} | {fmt(m['reached_at_step'], 'd')} "
                     f"| {fmt(m['reached_at_seconds'], '.1f')} | {fmt(m['step_fraction_of_adam'], '.2f')} "
                     f"| {fmt(m['time_fraction_of_adam'], '.2f')} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--out", type=Path, default=Path("runs/second_order"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seq-len", type=int, nargs="+", default=[50, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args(argv)
    if a.experiment == "temporal_order":
        print(temporal_order(a.out, a.overrides, a.seq_len, a.seeds))
    else:
        print(compare(a.experiment, a.out, a.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
