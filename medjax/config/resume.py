"""Resuming a run directory only with the configuration that made it.

``medjax-train`` resumes whatever its run directory holds. If the stored
``config.yaml`` (the resolved config, trainer options filled in) and the new
command differ in what is learned (model, task, data, optimizer, augmentation,
seed, transfer, trainer options that change training), continuing would mix
two experiments under one name: the run refuses, listing the differing keys.
Options that only say how long or how visibly to train (``IGNORED_KEYS``, the
same ones Hydra leaves out of the run directory's name) may change.
"""

import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from omegaconf import OmegaConf

from medjax.errors import RunDirectoryError

#: Dotted keys (with everything below them) that a resumed run may change:
#: conf/train.yaml's ``hydra.job.config.override_dirname.exclude_keys``.
IGNORED_KEYS = (
    "name",
    "compilation_cache",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.eval_every_epochs",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.log_every",
    "trainer.progress",
    # how a run reacts to a diverging step: a stopped run may resume with skip
    "trainer.on_nonfinite",
    "trainer.max_nonfinite",
    "data.data_dir",
    "data.num_threads",
    # how many processes train: a run checkpointed by N processes resumes with M
    "distributed.enabled",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
    "distributed.local_device_ids",
    "distributed.initialization_timeout",
)

_ABSENT = object()

#: Options added after runs were made without them, with the value that does
#: what those runs did: a stored config without the key resumes as if it had it.
ADDED_WITH_DEFAULT = {"trainer.precision": "fp32"}
SHOWN = 8  # differing keys listed in the message (a new model differs in many)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists stay values."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _ignored(key: str, ignored: Iterable[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in ignored)


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    return repr(value) if isinstance(value, str) else str(value)


def differences(
    stored: Mapping[str, Any], new: Mapping[str, Any],
    ignored: Iterable[str] = IGNORED_KEYS,
) -> list[str]:
    """``"<dotted key>: <stored> -> <new>"`` for every key whose values differ
    (a key only one side has included), in key order, ``ignored`` left out."""
    ignored = tuple(ignored)
    old, now = flatten(stored), flatten(new)
    for key, value in ADDED_WITH_DEFAULT.items():
        old.setdefault(key, value)
        now.setdefault(key, value)
    return [
        f"{key}: {_show(old.get(key, _ABSENT))} -> {_show(now.get(key, _ABSENT))}"
        for key in sorted(old.keys() | now.keys())
        if not _ignored(key, ignored) and old.get(key, _ABSENT) != now.get(key, _ABSENT)
    ]


def has_checkpoints(run_dir: str) -> bool:
    """Whether ``run_dir/checkpoints`` holds a committed step (Orbax's
    ``<step>``; a save cut short is ``<step>.orbax-checkpoint-tmp-*``)."""
    directory = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def check_resume(
    run_dir: str, config: Mapping[str, Any], ignored: Iterable[str] = IGNORED_KEYS
) -> None:
    """Fails if ``run_dir`` has checkpoints and a ``config.yaml`` that differs
    from ``config`` (resolved the same way) beyond ``ignored`` keys.

    Raises:
        RunDirectoryError: one line listing the differing keys.
    """
    path = os.path.join(run_dir, "config.yaml")
    if not (os.path.isfile(path) and has_checkpoints(run_dir)):
        return
    try:
        stored = OmegaConf.to_container(OmegaConf.load(path))
    except (OSError, yaml.YAMLError) as error:
        raise RunDirectoryError(f"{path}: unreadable ({error})") from error
    if not isinstance(stored, Mapping):
        raise RunDirectoryError(f"{path}: not a medjax config (expected a mapping)")
    changed = differences(stored, config, ignored)
    if changed:
        shown = "; ".join(changed[:SHOWN])
        if len(changed) > SHOWN:
            shown += f"; and {len(changed) - SHOWN} more"
        raise RunDirectoryError(
            f"{run_dir}: holds a run trained with another configuration; resuming it "
            f"would change what is learned ({shown}): use another run directory "
            "(e.g. name=...) or the stored options"
        )
