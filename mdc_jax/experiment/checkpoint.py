"""Checkpoints as plain ``.npz`` files (no pickle), written atomically.

A checkpoint holds the parameters, the optimizer state, the step and the run's RNG key. It is
written to a temporary file in the same folder, flushed to disk, then renamed over its final name,
so a run killed at any moment leaves either the previous checkpoint or the new one, never half of
one.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np

_NAME = re.compile(r"^ckpt-(\d{8})\.npz$")


def path_key(path) -> str:
    """A pytree path as ``"0/1"`` or ``"W"``: the keys of ``final.npz``."""
    parts = []
    for entry in path:
        for attr in ("idx", "name", "key"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts) or "value"


def flatten_named(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{prefix}/{path_key(p)}" if prefix else path_key(p): np.asarray(x) for p, x in leaves}


def atomic_write_text(path: Path, text: str | bytes) -> None:
    """Writes ``text`` (UTF-8) to a temporary file beside ``path`` and renames it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    tmp.replace(path)


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(folder: Path, step: int, params, opt_state, key) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = flatten_named(params, "params")
    # optimizer state by leaf position: its structure is rebuilt from the config on restore
    arrays.update({f"opt_state/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt_state))})
    arrays["step"] = np.asarray(step, np.int64)
    arrays["key"] = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    path = folder / f"ckpt-{step:08d}.npz"
    atomic_savez(path, arrays)
    return path


def checkpoint_names(folder: Path) -> list[Path]:
    """Everything in ``folder`` named like a checkpoint, files or not."""
    folder = Path(folder)
    return sorted(folder / name for name in os.listdir(folder) if _NAME.match(name)) if folder.is_dir() else []


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in ``folder``, oldest first; anything else named like one
    (a directory, say) is skipped with a warning."""
    found = []
    for path in checkpoint_names(folder):
        if path.is_file():
            found.append((int(_NAME.match(path.name).group(1)), path))
        else:
            print(f"warning: skipping {path}: named like a checkpoint but not a file", file=sys.stderr, flush=True)
    return sorted(found)


class CheckpointMismatch(ValueError):
    """A readable checkpoint that does not fit the model or optimizer the config builds."""


def restore_checkpoint(path: Path, params_like, opt_state_like):
    """Loads a checkpoint into the structures of ``params_like`` and ``opt_state_like``.

    Raises :class:`CheckpointMismatch` when the file is readable but holds other shapes or another
    optimizer state (e.g. ``optimizer.name`` changed); other errors mean the file is damaged.
    """
    with np.load(path, allow_pickle=False) as data:
        names = flatten_named(params_like, "params")
        missing = [k for k in names if k not in data]
        if missing:
            raise CheckpointMismatch(f"{path}: checkpoint lacks parameters {missing[:3]}; was it written by another config?")
        p_leaves = [data[k] for k in names]
        o_like = jax.tree.leaves(opt_state_like)
        stored = sum(1 for k in data.files if k.startswith("opt_state/"))
        if stored != len(o_like):
            raise CheckpointMismatch(f"{path}: the optimizer state has {stored} arrays; the config's optimizer has "
                                     f"{len(o_like)} (optimizer.name or optimizer.schedule changed?)")
        o_leaves = [data[f"opt_state/{i}"] for i in range(len(o_like))]
        for k, a, b in [*zip(names, names.values(), p_leaves),
                        *((f"opt_state/{i}", np.asarray(x), y) for i, (x, y) in enumerate(zip(o_like, o_leaves)))]:
            if a.shape != b.shape or a.dtype != b.dtype:
                raise CheckpointMismatch(f"{path}: {k} has shape {b.shape} {b.dtype}; the config expects "
                                         f"{a.shape} {a.dtype}.")
        params = jax.tree.unflatten(jax.tree.structure(params_like), [jax.numpy.asarray(x) for x in p_leaves])
        opt_state = jax.tree.unflatten(jax.tree.structure(opt_state_like), [jax.numpy.asarray(x) for x in o_leaves])
        step, key = data["step"], data["key"]
        named = _NAME.match(Path(path).name)
        if step.shape != () or step.dtype.kind not in "iu" or step < 0 or (named and int(named.group(1)) != step):
            raise ValueError(f"its step is {step!r}; expected a non-negative integer"
                             + (f" equal to the {int(named.group(1))} of its name" if named else ""))
        key_like = np.asarray(jax.random.key_data(jax.random.PRNGKey(0)))
        if key.shape != key_like.shape or key.dtype != key_like.dtype:
            raise ValueError(f"its key has shape {key.shape} {key.dtype}; expected {key_like.shape} {key_like.dtype}")
        return params, opt_state, int(step), jax.numpy.asarray(key)


def latest_checkpoint(folder: Path, params_like, opt_state_like):
    """The newest checkpoint that loads, or ``None``; a damaged one (truncated, empty, not a zip) is
    skipped with a warning naming it, and left in place. A readable checkpoint that does not fit the
    config raises :class:`CheckpointMismatch`."""
    for _step, path in reversed(list_checkpoints(folder)):
        try:
            return restore_checkpoint(path, params_like, opt_state_like)
        except CheckpointMismatch:
            raise
        except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as err:  # e.g. truncated by a disk failure
            print(f"warning: skipping damaged checkpoint {path}: {type(err).__name__}: {err}", file=sys.stderr,
                  flush=True)
    return None
