"""Loading a pretrained subtree of a saved medjax run into a fresh model.

``load_pretrained`` copies every array of the target model's ``params`` and
``batch_stats`` that lies under a chosen prefix from the same relative path
under a prefix of a saved run, without knowing the source model: the
checkpoint's own tree metadata gives its structure, the copy is planned by
:func:`medjax.models.weights.plan_copy` (the routine every weight transfer
shares), and only the arrays that are copied are read (an Orbax partial restore;
the optimizer state is never read).

Which checkpoint (``checkpoint=``):

- ``<run_dir>``, or its ``<run_dir>/checkpoints``: the best step by the run's
  ``config.yaml`` ``trainer.best_metric`` / ``trainer.best_mode`` if steps were
  ranked, else the latest;
- ``<run_dir>:best``, ``<run_dir>:latest``, ``<run_dir>:<step>``: that one;
- ``<run_dir>/checkpoints/<step>``: the directory of one saved step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
import yaml
from etils import epath
from flax import traverse_util

from medjax.engine.checkpoint import (
    UNREADABLE, Checkpoints, drop_abandoned_read_noise, first_line,
)
from medjax.errors import ConfigError, RunDirectoryError
from medjax.models.groups import Path, split_path, starts_with
from medjax.models.weights import (
    COLLECTIONS,
    LoadReport,
    apply_copy,
    flat_collections,
    names,
    plan_copy,
)


def load_pretrained(
    variables: Mapping[str, Any],
    checkpoint: str | os.PathLike,
    subtrees: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], LoadReport]:
    """Copies arrays of a saved run into a freshly initialised model's variables.

    Every leaf of ``variables['params']`` and ``variables['batch_stats']`` under a
    target prefix is looked up at the same relative path under the matching
    source prefix of the checkpoint: copied (cast to the target's dtype, placed
    with the target's sharding) if the shapes agree, else kept at init and
    reported. A leaf under several target prefixes uses the longest.

    Args:
        variables: ``{"params": ..., "batch_stats": ...}`` nested dicts of arrays
            (other collections are returned as they are).
        checkpoint: a run directory, ``<run_dir>:best|latest|<step>``, or one
            step's directory ``<run_dir>/checkpoints/<step>`` (see module doc).
        subtrees: ``{target_prefix: source_prefix}`` of ``'/'``-joined module
            paths inside each collection, e.g. ``{"backbone": "backbone"}`` or
            ``{"backbone_0": "backbone", "backbone_1": "backbone"}``; None: the
            whole tree (``{"": ""}``).

    Returns:
        The new variables (same structure) and a ``LoadReport``.

    Raises:
        ConfigError: no such checkpoint, a prefix that matches nothing, or
            nothing loaded at all.
    """
    subtrees = _check_subtrees(subtrees)
    step_dir, step = resolve_checkpoint(checkpoint)
    with _unreadable_as_one_line(checkpoint, step_dir):
        source_meta = _read_metadata(step_dir)
    report = LoadReport(source=str(step_dir), step=step, subtrees=subtrees)
    targets, sources = flat_collections(variables), flat_collections(source_meta)
    _check_prefixes_match(subtrees, targets, sources)
    plan = plan_copy(targets, sources, subtrees, report)
    if not any(plan.values()):
        detail = (
            f"{len(report.mismatched)} arrays differ in shape, e.g. "
            + names(f"{p} {list(t)} vs {list(s)}" for p, t, s in report.mismatched)
            if report.mismatched
            else f"the checkpoint has {_top_level_names(sources)}"
        )
        raise ConfigError(
            f"transfer.checkpoint={checkpoint}: nothing loaded with transfer.subtrees="
            f"{subtrees}: {detail}"
        )
    with _unreadable_as_one_line(checkpoint, step_dir):
        arrays = _restore(step_dir, sources, plan)
    return apply_copy(variables, plan, arrays, report), report


def resolve_checkpoint(checkpoint: str | os.PathLike) -> tuple[epath.Path, int | None]:
    """The step directory that ``checkpoint`` names, and its step number.

    Args:
        checkpoint: see the module docstring for the accepted forms.

    Raises:
        ConfigError: the directory does not exist, holds no checkpoints, or the
            step asked for was not saved.
    """
    path, selector = os.fspath(checkpoint), None
    if not os.path.exists(path) and ":" in path:
        head, tail = path.rsplit(":", 1)
        if tail in ("best", "latest") or tail.isdigit():
            path, selector = head, tail
    option = f"transfer.checkpoint={checkpoint}"
    if not os.path.isdir(path):
        raise ConfigError(f"{option}: no such directory")
    if os.path.isdir(os.path.join(path, "state")):
        if selector is not None:
            raise ConfigError(f"{option}: a step directory takes no ':{selector}'")
        name = os.path.basename(os.path.normpath(path))
        return epath.Path(os.path.abspath(path)), int(name) if name.isdigit() else None

    if os.path.isdir(os.path.join(path, "checkpoints")):
        run_dir, checkpoint_dir = path, os.path.join(path, "checkpoints")
    else:
        run_dir, checkpoint_dir = os.path.dirname(os.path.abspath(path)), path
    best_metric, best_mode = _run_best_metric(run_dir)
    checkpoints = Checkpoints(
        checkpoint_dir, best_metric=best_metric, best_mode=best_mode
    )
    try:
        saved = list(checkpoints.manager.all_steps())
        if not saved:
            raise ConfigError(
                f"{option}: no checkpoints in {checkpoint_dir} (expected a medjax run "
                "directory, <run_dir>:<step> or <run_dir>/checkpoints/<step>)"
            )
        if selector is None or selector == "best":
            step = checkpoints.best_step()
        elif selector == "latest":
            step = checkpoints.latest_step()
        else:
            step = int(selector)
            if step not in saved:
                raise ConfigError(f"{option}: step {step} not saved; saved: {saved}")
    finally:
        checkpoints.close()
    step_dir = epath.Path(os.path.abspath(checkpoint_dir)) / str(step)
    if not (step_dir / "state").is_dir():
        raise ConfigError(f"{option}: {step_dir} holds no 'state' item")
    return step_dir, step


def _run_best_metric(run_dir: str) -> tuple[str | None, str]:
    """``trainer.best_metric`` and ``best_mode`` from the run's ``config.yaml``."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        return None, "max"
    with open(config_path) as f:
        config = yaml.safe_load(f) or {}
    trainer = config.get("trainer") or {}
    mode = trainer.get("best_mode") or "max"
    return trainer.get("best_metric") or None, mode if mode in ("max", "min") else "max"


@contextlib.contextmanager
def _unreadable_as_one_line(checkpoint, step_dir: epath.Path):
    """A damaged source checkpoint (what ``Checkpoints.restore`` calls
    unreadable) as one ``RunDirectoryError`` naming the option and the step."""
    try:
        yield
    except UNREADABLE as error:
        drop_abandoned_read_noise()
        raise RunDirectoryError(
            f"transfer.checkpoint={checkpoint}: {step_dir}: unreadable checkpoint "
            f"({first_line(error)})"
        ) from error


def _read_metadata(step_dir: epath.Path) -> dict[str, Any]:
    """The saved ``TrainState``'s tree of array metadata (shape, dtype)."""
    tree = ocp.PyTreeCheckpointHandler().metadata(step_dir / "state").tree
    if not isinstance(tree, Mapping) or "params" not in tree:
        names = sorted(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise ConfigError(
            f"transfer.checkpoint={step_dir}: expected a saved TrainState with "
            f"'params', found {names}"
        )
    return {c: tree[c] or {} for c in COLLECTIONS if c in tree}


def _restore(
    step_dir: epath.Path,
    sources: dict[str, dict[Path, Any]],
    plan: dict[str, dict[Path, Path]],
) -> dict[str, dict[Path, np.ndarray]]:
    """Reads only the planned source arrays, as numpy arrays on the host.

    An Orbax partial restore: ``PyTreeRestore(item=..., partial_restore=True)``
    with an item holding just the wanted leaves' metadata; ``params`` and
    ``batch_stats`` outside it, and the optimizer state, are not read."""
    item, restore_args = {}, {}
    for collection, mapping in plan.items():
        if not mapping:
            continue
        wanted = {s: sources[collection][s] for s in mapping.values()}
        item[collection] = traverse_util.unflatten_dict(wanted)
        restore_args[collection] = traverse_util.unflatten_dict(
            {s: ocp.RestoreArgs(restore_type=np.ndarray) for s in wanted}
        )
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    try:
        restored = checkpointer.restore(
            step_dir / "state",
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True
            ),
        )
    finally:
        checkpointer.close()
    return {c: traverse_util.flatten_dict(restored[c]) for c in restored}


def _check_subtrees(subtrees: Mapping[str, str] | None) -> dict[str, str]:
    if subtrees is None:
        return {"": ""}
    if not isinstance(subtrees, Mapping) or not subtrees:
        raise ConfigError(
            "transfer.subtrees: expected a non-empty mapping {target_prefix: "
            f"source_prefix}} or null, got {subtrees!r}"
        )
    checked = {}
    for target, source in subtrees.items():
        if not isinstance(target, str) or not isinstance(source, str):
            raise ConfigError(
                f"transfer.subtrees: expected '/'-joined path strings, got "
                f"{target!r}: {source!r}"
            )
        checked[target.strip("/")] = source.strip("/")
    return checked


def _check_prefixes_match(
    subtrees: Mapping[str, str],
    targets: dict[str, dict[Path, Any]],
    sources: dict[str, dict[Path, Any]],
) -> None:
    """A prefix that matches nothing is a typo: say what names there are."""
    for target_name, source_name in subtrees.items():
        target, source = split_path(target_name), split_path(source_name)
        if not any(starts_with(p, target) for t in targets.values() for p in t):
            raise ConfigError(
                f"transfer.subtrees: target prefix {target_name!r} matches nothing "
                f"in the model, which has {_top_level_names(targets)}"
            )
        if not any(starts_with(p, source) for s in sources.values() for p in s):
            raise ConfigError(
                f"transfer.subtrees: source prefix {source_name!r} matches nothing "
                f"in the checkpoint, which has {_top_level_names(sources)}"
            )


def _top_level_names(flat_trees: dict[str, dict[Path, Any]]) -> str:
    top = sorted({p[0] for tree in flat_trees.values() for p in tree if p})
    return f"top-level names {top}"
