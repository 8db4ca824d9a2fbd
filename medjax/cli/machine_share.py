"""Parallel sweeps on one machine without oversubscribing it.

With ``hydra/launcher=joblib`` and ``hydra.launcher.n_jobs=N`` (N > 1), Hydra
runs N jobs at once in N worker processes. Each of them would otherwise start
XLA with a thread pool over every core (and JAX over every GPU), N times over.
Here each worker process takes one of N slots the first time it runs a job
(an ``flock`` on ``<sweep dir>/.slots/<k>.lock``, held until the process
ends) and keeps to slot k's share of the machine: the k-th of N equal parts
of the cores it may run on (``sched_setaffinity``, which XLA's thread pools
follow) and of the GPUs (``CUDA_VISIBLE_DEVICES``), set before JAX starts.
"""

import fcntl
import os
import shutil
import subprocess

import numpy as np

_held: dict[str, object] = {}  # the slot this process took: {"slot", "handle"}


def split(items: list, parts: int, index: int) -> list:
    """The ``index``-th of ``parts`` near-equal consecutive parts of ``items``;
    when there are fewer items than parts, the parts share them round-robin."""
    if len(items) < parts:
        return [items[index % len(items)]] if items else []
    return [items[i] for i in np.array_split(np.arange(len(items)), parts)[index]]


def take_slot(directory: str, slots: int) -> int:
    """A free slot of ``slots`` in ``directory``, held (by an open, locked
    file) for the rest of this process; the same one on later calls."""
    if "slot" in _held:
        return int(_held["slot"])
    os.makedirs(directory, exist_ok=True)
    while True:
        for slot in range(slots):
            handle = open(os.path.join(directory, f"{slot}.lock"), "a")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held.update(slot=slot, handle=handle)
            return slot
        # more workers than slots (joblib restarting one): wait for a free slot
        handle = open(os.path.join(directory, "0.lock"), "a")  # noqa: SIM115
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held.update(slot=0, handle=handle)
        return 0


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                             check=False).stdout
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU")]


def parallel_jobs(hydra_config) -> int:
    """How many jobs of this sweep run at once (1 unless a joblib launcher
    with ``n_jobs`` > 1 runs it)."""
    from hydra.types import RunMode

    launcher = hydra_config.get("launcher") or {}
    if hydra_config.mode != RunMode.MULTIRUN or "JoblibLauncher" not in str(
            launcher.get("_target_", "")):
        return 1
    jobs = launcher.get("n_jobs") or 1
    if jobs < 0:  # joblib's -1: one per core
        jobs = max(1, len(os.sched_getaffinity(0)) + 1 + jobs)
    return int(jobs)


def share_machine(hydra_config) -> dict | None:
    """Keeps this job process to its slot's cores and GPUs when its sweep
    runs jobs in parallel (see the module docstring); must run before JAX
    starts. Returns ``{"slot", "slots", "cpus", "gpus"}``, or None."""
    slots = parallel_jobs(hydra_config)
    if slots <= 1:
        return None
    slot = take_slot(os.path.join(hydra_config.sweep.dir, ".slots"), slots)
    if "cpus" not in _held:
        cpus = sorted(os.sched_getaffinity(0))
        _held["cpus"] = split(cpus, slots, slot)
        os.sched_setaffinity(0, _held["cpus"])
        gpus = _gpus()
        _held["gpus"] = split(gpus, slots, slot)
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_held["gpus"])
    return {"slot": slot, "slots": slots, "cpus": _held["cpus"], "gpus": _held["gpus"]}
