"""Data-parallel SPMD: one 1-D ``('data',)`` mesh over the devices; batches are
sharded along it, parameters and optimizer state replicated. Everything that knows
about devices lives here."""

from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from medjax.errors import ConfigError


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of all
    processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), ("data",),
        axis_types=(jax.sharding.AxisType.Auto,), devices=devices,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, option: str = "data.batch_size") -> None:
    """Raises a one-line error if ``batch_size`` does not split evenly over the mesh."""
    devices = mesh.devices.size
    if batch_size < 1 or batch_size % devices:
        raise ConfigError(
            f"{option}={batch_size} must be a positive multiple of the {devices} "
            f"devices it is split over (e.g. {devices * max(1, batch_size // devices)})"
        )


def to_host(tree):
    """Fetches (sharded) arrays to numpy on every process."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))
