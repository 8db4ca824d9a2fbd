"""Multi-process (multi-host) runs on JAX's multi-controller runtime.

Every process runs the same program; ``jax.distributed.initialize`` connects
them, after which ``jax.devices()`` lists the devices of all processes and the
one ``('data',)`` mesh (``medjax.engine.sharding``) spans them. Each process
reads only its part of every global batch (``medjax.data.pipeline``), only
process 0 writes the run directory's logs, figures and summary, and Orbax
writes checkpoints from all of them. This module holds what the processes must
agree on: how they are started and when they stop.

Options (``distributed.*`` of ``medjax-train``), each falling back to an
environment variable, then to JAX's own cluster detection (SLURM, Open MPI,
Kubernetes, Cloud TPU) for what is still unset:

- ``enabled`` (``MEDJAX_DISTRIBUTED=1``): off by default;
- ``coordinator_address`` (``MEDJAX_COORDINATOR_ADDRESS``, e.g. ``10.0.0.1:1234``:
  process 0's host and a free port);
- ``num_processes`` (``MEDJAX_NUM_PROCESSES``), ``process_id``
  (``MEDJAX_PROCESS_ID``);
- ``local_device_ids`` (``MEDJAX_LOCAL_DEVICE_IDS``, comma-separated): the
  accelerators this process drives, when several processes share a host;
- ``initialization_timeout`` (seconds to wait for every process to join).
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from medjax.errors import ConfigError

logger = logging.getLogger(__name__)

ENVIRONMENT = {
    "enabled": "MEDJAX_DISTRIBUTED",
    "coordinator_address": "MEDJAX_COORDINATOR_ADDRESS",
    "num_processes": "MEDJAX_NUM_PROCESSES",
    "process_id": "MEDJAX_PROCESS_ID",
    "local_device_ids": "MEDJAX_LOCAL_DEVICE_IDS",
}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _integer(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < 0 or isinstance(value, bool):
        raise ConfigError(f"distributed.{name}: expected a non-negative integer, got {value!r}")
    return number


def resolve_options(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The keyword arguments of ``jax.distributed.initialize`` for
    ``options`` (the ``distributed`` config node), an option left null taken
    from ``environ`` (default ``os.environ``); None when the run is a single
    process. Raises ``ConfigError`` (one line) for values that cannot work."""
    environ = os.environ if environ is None else environ
    merged = {}
    for name in (*ENVIRONMENT, "initialization_timeout"):
        value = options.get(name)
        if value is None and name in ENVIRONMENT:
            value = environ.get(ENVIRONMENT[name])
        merged[name] = value
    enabled = merged.pop("enabled")
    if isinstance(enabled, str):
        if enabled.strip().lower() not in TRUE + FALSE:
            raise ConfigError(
                f"distributed.enabled ({ENVIRONMENT['enabled']}): expected true or false, "
                f"got {enabled!r}"
            )
        enabled = enabled.strip().lower() in TRUE
    if not enabled:
        return None
    num_processes = _integer("num_processes", merged["num_processes"])
    process_id = _integer("process_id", merged["process_id"])
    if num_processes is not None and num_processes < 1:
        raise ConfigError("distributed.num_processes: expected at least 1, got 0")
    if None not in (num_processes, process_id) and process_id >= num_processes:
        raise ConfigError(
            f"distributed.process_id={process_id}: expected below "
            f"distributed.num_processes={num_processes}"
        )
    devices = merged["local_device_ids"]
    if isinstance(devices, str):
        devices = [d for d in devices.replace(" ", "").split(",") if d]
    if devices is not None:
        devices = [_integer("local_device_ids", d) for d in devices]
    timeout = merged["initialization_timeout"]
    kwargs = {
        "coordinator_address": merged["coordinator_address"],
        "num_processes": num_processes,
        "process_id": process_id,
        "local_device_ids": devices,
    }
    if timeout is not None:
        kwargs["initialization_timeout"] = _integer("initialization_timeout", timeout)
    return kwargs


def initialize(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> bool:
    """Connects this process to the others (``jax.distributed.initialize``)
    when ``options`` or the environment ask for it; must run before anything
    touches a JAX device. Returns whether the run is multi-process."""
    kwargs = resolve_options(options, environ)
    if kwargs is None:
        return False
    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as error:
        # JAX's messages for options it cannot complete (no coordinator
        # address outside a known cluster), or for processes that never joined.
        message = " ".join(str(error).split())
        raise ConfigError(f"distributed: {message[:400]}") from error
    logger.info(
        "medjax: process %d of %d, %d local of %d devices",
        jax.process_index(), jax.process_count(), jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_main_process() -> bool:
    """Process 0: the one that writes the run directory's files."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is true on any process (every process must call this
    at the same point: it is a collective)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(int(bool(flag)), np.int32))
    return bool(np.max(flags))


def barrier(name: str) -> None:
    """Waits until every process reaches ``barrier(name)`` (nothing to wait
    for in a single-process run)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
