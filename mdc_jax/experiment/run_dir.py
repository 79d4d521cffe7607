"""A run directory of `mdc-jax train`: its name, its files, and the checks before a run writes there.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON record a
line), ``checkpoints/``, ``final.npz``, ``summary.json`` and the plots. A new run only writes into a
new or empty folder; a resume only continues a run whose saved config it may change at the keys of
:data:`RESUMABLE`, and checks every file it will write before it writes any.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from .checkpoint import atomic_write_text, checkpoint_names, list_checkpoints
from .config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict, parse_override, read_yaml, safe_name
from .models import get_model


class MetricsLog:
    """metrics.jsonl writer and console output (a progress line on a terminal, log lines otherwise).

    ``write=False`` (every process but 0 of a run across processes): reads only, writes and says nothing."""

    def __init__(self, run_dir: Path, tty: bool, write: bool = True):
        self.path, self.tty, self.write = run_dir / "metrics.jsonl", tty, write

    def truncate_after(self, step: int) -> None:
        """On resume: drop records newer than the checkpoint, they will be produced again (a line
        that is not a record is kept as it is)."""
        if not self.write or not self.path.exists():
            return
        kept = [line for line, record in read_metrics(self.path) if record is None or record["step"] <= step]
        atomic_write_text(self.path, b"".join(line + b"\n" for line in kept))

    def record(self, **record) -> None:
        if not self.write:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def say(self, text: str, progress: bool = False) -> None:
        if not self.write:
            return
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # a path that is not UTF-8
        if progress and self.tty:
            print("\r" + text.ljust(100), end="", flush=True)
        elif not progress or not self.tty:
            if self.tty:
                print("\r" + " " * 100 + "\r", end="")
            print(text, flush=True)


def read_metrics(path: Path) -> list[tuple[bytes, dict | None]]:
    """The lines of a ``metrics.jsonl`` with their records; a line that is not a JSON object with an
    integer ``step`` (a hand edit, a half-written line) gets ``None`` and a warning naming it."""
    lines, bad = [], []
    for number, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            record = None
        if not (isinstance(record, dict) and type(record.get("step")) is int):
            record = None
            bad.append(number)
        lines.append((line, record))
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        print(f"warning: {path}: skipping line(s) {', '.join(map(str, bad[:5]))}{more}: not a JSON record with "
              f"an integer \"step\"", file=sys.stderr, flush=True)
    return lines


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """``runs/<name>-<timestamp>``, with a suffix ``-2``, ``-3``, ... if a run started the same second."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / f"{cfg.name}-{stamp}", 2
    while path.exists():
        path, n = Path(root) / f"{cfg.name}-{stamp}-{n}", n + 1
    return path


def check_new_run_dir(path: str | Path, flag: str = "--out", hint: str = "") -> None:
    """Refuses an output directory that exists and is not an empty folder: nothing saved is overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: exists and is not a directory; the run directory must be a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"{flag} {path}: exists and is not empty; " + (hint or f"give a new or empty directory, "
                          f"or --resume {path} to continue the run there"))


def check_resumable(run_dir: Path) -> None:
    """Refuses a resume that could not write its files, before anything in the run directory changes."""
    folder = run_dir / "checkpoints"
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--resume {run_dir}: {folder} is not a directory; the run's checkpoints are written there")
    for path in [*checkpoint_names(folder), *(run_dir / n for n in ("metrics.jsonl", "summary.json", "final.npz"))]:
        if path.exists() and not path.is_file():
            raise ConfigError(f"--resume {run_dir}: {path} is not a file, and the resume writes there; move it away "
                              f"and resume again")


def open_run_dir(cfg: ExperimentConfig | None, out_dir, resume, writer: bool = True) -> tuple[ExperimentConfig, Path]:
    """The config and the run directory, created; a new run gets a new or empty folder, a resume a config it
    may apply and a directory it can write. ``writer=False`` (a process other than 0 of a run across
    processes): the same checks of a resume, none of a new directory, nothing created."""
    if cfg is None:
        if not resume:
            raise ConfigError("train: give a config, or resume=RUN_DIR to continue a run from its own config.yaml")
        cfg = load_run_config(resume)
    if resume and out_dir:
        raise ConfigError(f"--out and --resume cannot be combined: the run directory is RUN_DIR ({resume})")
    get_model(cfg.model.kind)  # an unknown kind is refused before anything is written
    run_dir = Path(resume) if resume else Path(out_dir) if out_dir else default_run_dir(cfg)
    if resume:
        cfg = check_resume_config(cfg, run_dir)
        check_resumable(run_dir)
    elif writer:
        check_new_run_dir(run_dir)  # a new run never writes over files: --out is new or empty
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir



# Kept for run directories written before issue 9 (commit 9c9521d, 2026-11-25), when every model kind
# shared one `model:` section: their config.yaml lists all of these keys, at these defaults, for any
# kind, and `--resume` of such a run is refused ("unknown key 'model.fit_intercept'") without this
# table (checked on a run written by d37c6f1). A key is dropped only where the kind does not declare
# it and its value is this default, so a real typo in a saved config is still refused.
_LEGACY_MODEL_DEFAULTS = {"hidden": [], "activation": "tanh", "l2": 0.0, "hidden_size": 128, "seq_len": 64,
                          "fit_intercept": True}


def load_run_config(run_dir: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """The resolved ``config.yaml`` a run directory holds, with ``KEY=VALUE`` overrides applied."""
    return config_from_dict(read_run_config(run_dir), str(Path(run_dir) / "config.yaml"),
                            [parse_override(o) for o in overrides])


def read_run_config(run_dir: str | Path) -> Any:
    """The YAML of a run directory's ``config.yaml``, not yet validated, as today's loader reads it:
    the keys of a pre-issue-9 model section dropped and the name made a valid run name."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    raw = read_yaml(path)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        raw["name"] = safe_name(raw["name"])  # a run named after its config file before names were checked
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        try:
            fields = {f.name for f in dataclasses.fields(get_model(raw["model"].get("kind")).options)}
        except ValueError:
            fields = None  # the loader reports the unknown kind
        if fields is not None:
            raw["model"] = {k: v for k, v in raw["model"].items()
                            if k in fields or _LEGACY_MODEL_DEFAULTS.get(k, object()) != v}
    return raw


# What a resume may change: how long and how often, and the optimizer's settings (a lower learning
# rate after a divergence, another schedule or clipping); also train.dp.accountant, which only reports
# ε (see check_resume_config). The model, the data, the seed and the gradient stay those of the run.
RESUMABLE = ("train.steps", "train.log_every", "train.eval_every", "train.checkpoint_every", "train.devices",
             "optimizer.")


def check_resume_config(cfg: ExperimentConfig, run_dir: Path) -> ExperimentConfig:
    """``cfg`` if it differs from the run's saved config only where a resume may change it."""
    raw = read_run_config(run_dir)
    train = raw.get("train") if isinstance(raw, dict) else None
    # The saved config is read with cfg's accountant, which only reports ε: so a run whose σ its own
    # accountant cannot account for (dp.MIN_NOISE_MULTIPLIER) resumes with --set train.dp.accountant=rdp.
    accountant = []
    if cfg.train.dp is not None and isinstance(train, dict) and isinstance(train.get("dp"), dict):
        accountant = [("train.dp.accountant", cfg.train.dp.accountant)]
    saved = config_from_dict(raw, str(Path(run_dir) / "config.yaml"), accountant)
    a, b = config_to_dict(saved), config_to_dict(cfg)
    diff = [f"{s}.{k}" for s in sorted(set(a) | set(b)) if isinstance(a.get(s), dict) or isinstance(b.get(s), dict)
            for k in sorted(set(a.get(s) or {}) | set(b.get(s) or {}))
            if (a.get(s) or {}).get(k, "<unset>") != (b.get(s) or {}).get(k, "<unset>")]
    refused = [key for key in diff if not key.startswith(RESUMABLE)]
    if refused:
        raise ConfigError(f"--resume {run_dir}: the config differs from the run's saved config.yaml at "
                          f"{', '.join(refused)}; a resume may change only train.steps, the logging, evaluation "
                          f"and checkpoint intervals, train.devices, optimizer settings and train.dp.accountant")
    cfg.name = saved.name
    return cfg


def last_good_checkpoint(run_dir: Path) -> str:
    """Where a stopped run can be resumed from, in words."""
    kept = list_checkpoints(run_dir / "checkpoints")
    return f"the last good checkpoint is {kept[-1][1]}" if kept else "no checkpoint was written yet"


def save_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")


def plot_run(run_dir: Path, primary: str) -> None:
    """``train_loss.png`` and ``eval.png`` from ``metrics.jsonl`` (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for _, r in read_metrics(run_dir / "metrics.jsonl") if r is not None]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "error" not in r]
    evals = [(r["step"], r["eval"][primary]) for r in records if isinstance(r.get("eval"), dict) and primary in r["eval"]]
    title = os.fsencode(run_dir.name).decode("utf-8", "replace")  # a name that is not UTF-8 has surrogates
    for name, points, ylabel in [("train_loss.png", train, "training loss"), ("eval.png", evals, primary)]:
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}: {ylabel}")
            ax.grid(alpha=0.3)
            with warnings.catch_warnings():  # a run name in a script the font lacks: boxes, not warnings
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")
                fig.tight_layout()
                fig.savefig(run_dir / name, dpi=100)
        finally:
            plt.close(fig)
