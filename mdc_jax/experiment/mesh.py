"""The data-parallel layout of `mdc-jax train`: one mesh axis ``"batch"`` over ``train.devices`` devices (across
processes, every device of every process), each batch split along its sample axis, the parameters and the
optimizer state replicated."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from .config import ConfigError, ExperimentConfig
from .distributed import SINGLE


class Shardings(NamedTuple):
    """The data-parallel layout: a mesh whose one axis ``"batch"`` splits each batch, the parameters replicated."""

    replicated: Any
    batch: Any  # a pytree like the batch: each leaf split along its sample axis
    mesh: Any


def mesh_shardings(cfg: ExperimentConfig, batch_axes, procs=SINGLE) -> Shardings | None:
    """The layout over ``train.devices`` devices (across processes: every device of every process), or None
    for one device."""
    n = mesh_size(cfg, procs)
    if n == 1:
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:n]), ("batch",))

    def spec(axis):
        return NamedSharding(mesh, PartitionSpec(*([None] * axis + ["batch"])))

    return Shardings(NamedSharding(mesh, PartitionSpec()), jax.tree.map(spec, batch_axes), mesh)


def mesh_size(cfg: ExperimentConfig, procs=SINGLE) -> int:
    """The number of devices the batch is split over, checked against those visible and the batch size."""
    available = jax.devices()
    if procs.distributed:
        n = len(available)
        if cfg.train.devices not in (0, 1, n):
            raise ConfigError(f"train.devices is {cfg.train.devices}, but a run across {procs.num_processes} processes "
                              f"uses all their {n} devices: set train.devices to 0 (all) or {n}")
        where = f"the {n} devices of the {procs.num_processes} processes"
    else:
        n = cfg.train.devices or len(available)
        if n > len(available):
            raise ConfigError(f"train.devices is {n}, but only {len(available)} device(s) are visible")
        where = f"train.devices {n}"
    if n > 1 and cfg.train.batch_size % n and cfg.train.dp is None:  # DP pads its Poisson batch to a multiple of n
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be divisible by {where}")
    return n


def replicate(tree, shardings: Shardings | None):
    """``tree`` (parameters, optimizer state) replicated over the mesh's devices; as it is on one device."""
    return tree if shardings is None else jax.device_put(tree, shardings.replicated)
