"""Transfer learning: load a pretrained subtree by path, freeze or slow down parts
of the model through optax masking.

Loading (``load_pretrained``) copies every array of the target model's ``params``
and ``batch_stats`` that lies under a chosen prefix from the same relative path
under a prefix of a saved medjax run, without knowing the source model: the
checkpoint's own tree metadata gives its structure, and only the arrays that are
copied are read (an Orbax partial restore; the optimizer state is never read).

Which checkpoint (``checkpoint=``):

- ``<run_dir>``, or its ``<run_dir>/checkpoints``: the best step by the run's
  ``config.yaml`` ``trainer.best_metric`` / ``trainer.best_mode`` if steps were
  ranked, else the latest;
- ``<run_dir>:best``, ``<run_dir>:latest``, ``<run_dir>:<step>``: that one;
- ``<run_dir>/checkpoints/<step>``: the directory of one saved step.

Training (``transfer_optimizer``) labels every parameter ``head``, ``backbone``
or ``frozen`` (``parameter_groups``) and routes the labels through
``optax.multi_transform``: frozen parameters get exact zero updates (no weight
decay either), the backbone's updates are scaled by ``backbone_lr_factor``. The
BatchNorm statistics of frozen stages are frozen by the model itself (its
``frozen_stages`` field, see ``frozen_stages_for``).

Modes:

- ``scratch``: nothing loaded, everything trains (the baseline);
- ``feature_extractor``: the whole backbone is frozen, only the head trains;
- ``finetune``: everything trains; with ``trainable_stages=N`` only the last
  ``N`` stages of the backbone (and the head) train.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import yaml
from etils import epath
from flax import traverse_util

from medjax.errors import ConfigError
from medjax.engine.checkpoint import Checkpoints

MODES = ("scratch", "feature_extractor", "finetune")
GROUPS = ("head", "backbone", "frozen")
COLLECTIONS = ("params", "batch_stats")

Path = tuple[str, ...]
_STAGE = re.compile(r"stage(\d+)(_|$)")
_STEM = re.compile(r"stem(_|$)")


# -- loading -------------------------------------------------------------------


@dataclasses.dataclass
class LoadReport:
    """What ``load_pretrained`` did, leaf by leaf.

    Paths are ``'/'``-joined and start with the collection (``params/head/kernel``,
    ``batch_stats/backbone/stem_norm/mean``).

    Attributes:
        source: the step directory read.
        step: its step number (None if the directory name is not a number).
        subtrees: ``{target_prefix: source_prefix}`` used (``{"": ""}``: all).
        loaded: target paths copied from the checkpoint.
        mismatched: ``(target path, target shape, checkpoint shape)`` of arrays
            found under the same path with another shape (kept at init).
        missing: target paths under a target prefix that the checkpoint lacks
            (kept at init).
        untouched: target paths under no target prefix (kept at init).
        unused: checkpoint paths under a source prefix that no target took.
        loaded_values: number of values copied (all collections).
        loaded_parameters: number of values copied into ``params``.
        total_parameters: number of values in the target's ``params``.
    """

    source: str
    step: int | None
    subtrees: dict[str, str]
    loaded: list[str] = dataclasses.field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    missing: list[str] = dataclasses.field(default_factory=list)
    untouched: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    loaded_values: int = 0
    loaded_parameters: int = 0
    total_parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (shapes as lists)."""
        result = dataclasses.asdict(self)
        result["mismatched"] = [
            {
                "path": path,
                "target_shape": list(target),
                "checkpoint_shape": list(source),
            }
            for path, target, source in self.mismatched
        ]
        return result

    def summary(self) -> str:
        """A few human-readable lines, e.g. for the training log."""
        lines = [
            (
                f"loaded {len(self.loaded)} arrays ({_human(self.loaded_values)} "
                f"values; {_human(self.loaded_parameters)} of "
                f"{_human(self.total_parameters)} parameters) from {self.source}"
            ),
            f"{len(self.mismatched)} shape mismatches"
            + (": " if self.mismatched else "")
            + _names(
                f"{path} {list(target)} vs checkpoint {list(source)}"
                for path, target, source in self.mismatched
            ),
        ]
        for label, paths in (
            ("missing in checkpoint (kept at init)", self.missing),
            ("outside the loaded subtrees (kept at init)", self.untouched),
            ("unused from checkpoint", self.unused),
        ):
            if paths:
                lines.append(f"{label}: {_names(paths)}")
        return "\n".join(lines)


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
    source_meta = _read_metadata(step_dir)
    prefixes = {_split(target): _split(source) for target, source in subtrees.items()}
    report = LoadReport(source=str(step_dir), step=step, subtrees=subtrees)

    targets = {c: _flatten(variables.get(c, {})) for c in COLLECTIONS}
    sources = {c: _flatten(source_meta.get(c, {})) for c in COLLECTIONS}
    _check_prefixes_match(prefixes, targets, sources)

    plan: dict[str, dict[Path, Path]] = {c: {} for c in COLLECTIONS}
    used: set[tuple[str, Path]] = set()
    for collection in COLLECTIONS:
        for path, leaf in targets[collection].items():
            name = _join((collection, *path))
            prefix = _longest_prefix(path, prefixes)
            if prefix is None:
                report.untouched.append(name)
                continue
            source_path = prefixes[prefix] + path[len(prefix) :]
            meta = sources[collection].get(source_path)
            if meta is None:
                report.missing.append(name)
                continue
            used.add((collection, source_path))
            source_shape = tuple(getattr(meta, "shape", ()))
            if source_shape != _shape(leaf):
                report.mismatched.append((name, _shape(leaf), source_shape))
                continue
            plan[collection][path] = source_path
    for collection in COLLECTIONS:
        for source_path in sources[collection]:
            in_prefix = any(_starts_with(source_path, p) for p in prefixes.values())
            if in_prefix and (collection, source_path) not in used:
                report.unused.append(_join((collection, *source_path)))

    report.total_parameters = sum(
        int(np.prod(_shape(x))) for x in targets["params"].values()
    )
    if not any(plan.values()):
        detail = (
            f"{len(report.mismatched)} arrays differ in shape, e.g. "
            + _names(f"{p} {list(t)} vs {list(s)}" for p, t, s in report.mismatched)
            if report.mismatched
            else f"the checkpoint has {_top_level_names(sources)}"
        )
        raise ConfigError(
            f"transfer.checkpoint={checkpoint}: nothing loaded with transfer.subtrees="
            f"{subtrees}: {detail}"
        )

    arrays = _restore(step_dir, sources, plan)
    new_variables = dict(variables)
    for collection in COLLECTIONS:
        if not plan[collection]:
            continue
        flat = traverse_util.flatten_dict(variables[collection], keep_empty_nodes=True)
        for path, source_path in sorted(plan[collection].items()):
            value = arrays[collection][source_path]
            flat[path] = _like(value, flat[path])
            report.loaded.append(_join((collection, *path)))
            report.loaded_values += int(np.size(value))
            if collection == "params":
                report.loaded_parameters += int(np.size(value))
        new_variables[collection] = traverse_util.unflatten_dict(flat)
    return new_variables, report


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


def _shape(leaf: Any) -> tuple[int, ...]:
    """The shape of an array, or of a ``jax.ShapeDtypeStruct``."""
    return tuple(getattr(leaf, "shape", np.shape(leaf)))


def _like(value: np.ndarray, target: Any) -> Any:
    """``value`` with ``target``'s dtype, and its sharding if it is a jax.Array."""
    value = np.asarray(value).astype(np.dtype(target.dtype), copy=False)
    if isinstance(target, jax.Array):
        return jax.device_put(value, target.sharding)
    return jnp.asarray(value)


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
    prefixes: dict[Path, Path],
    targets: dict[str, dict[Path, Any]],
    sources: dict[str, dict[Path, Any]],
) -> None:
    """A prefix that matches nothing is a typo: say what names there are."""
    for target, source in prefixes.items():
        if not any(_starts_with(p, target) for t in targets.values() for p in t):
            raise ConfigError(
                f"transfer.subtrees: target prefix {_join(target)!r} matches nothing "
                f"in the model, which has {_top_level_names(targets)}"
            )
        if not any(_starts_with(p, source) for s in sources.values() for p in s):
            raise ConfigError(
                f"transfer.subtrees: source prefix {_join(source)!r} matches nothing "
                f"in the checkpoint, which has {_top_level_names(sources)}"
            )


def _top_level_names(flat_trees: dict[str, dict[Path, Any]]) -> str:
    names = sorted({p[0] for tree in flat_trees.values() for p in tree if p})
    return f"top-level names {names}"


def _flatten(tree: Any) -> dict[Path, Any]:
    """``{path: leaf}`` of a nested dict (empty sub-dicts have no leaves)."""
    if not isinstance(tree, Mapping):
        return {}
    return {
        tuple(str(k) for k in path): leaf
        for path, leaf in traverse_util.flatten_dict(tree).items()
    }


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _split(prefix: str) -> Path:
    return tuple(part for part in prefix.split("/") if part)


def _join(path: Path) -> str:
    return "/".join(path)


def _starts_with(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix


def _longest_prefix(path: Path, prefixes: Mapping[Path, Path]) -> Path | None:
    matches = [p for p in prefixes if _starts_with(path, p)]
    return max(matches, key=len) if matches else None


def _human(count: int) -> str:
    for threshold, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= threshold:
            return f"{count / threshold:.1f} {unit}"
    return str(count)


def _names(items, limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")


# -- freezing and learning rates ----------------------------------------------


def is_backbone(name: str) -> bool:
    """Top-level parameter names that belong to a feature extractor:
    ``backbone*`` (``backbone``, ``backbone_0``, ...) and ``encoder``."""
    return name.startswith("backbone") or name == "encoder"


def stage_of(path: Path) -> int | None:
    """Stage index of a backbone leaf from its module names below the top-level
    key: ``stem_*`` is stage 0, ``stage{i}_*`` is ``i``; None if neither."""
    for name in path[1:]:
        if _STEM.match(name):
            return 0
        match = _STAGE.match(name)
        if match:
            return int(match.group(1))
    return None


def backbone_stages(params: Mapping[str, Any]) -> dict[str, int]:
    """Number of stages of each backbone subtree of ``params``: one more than the
    largest ``stage{i}`` index; a backbone without stage names has one."""
    counts: dict[str, int] = {}
    for path in _flatten(params):
        if path and is_backbone(path[0]):
            stage = stage_of(path)
            counts[path[0]] = max(counts.get(path[0], 1), (stage or 0) + 1)
    return counts


def check_mode(mode: str, trainable_stages: int | None = None) -> None:
    """One-line errors for a transfer mode or stage count that cannot work."""
    if mode not in MODES:
        raise ConfigError(f"transfer.mode: expected one of {MODES}, got {mode!r}")
    if trainable_stages is None:
        return
    if mode != "finetune":
        raise ConfigError(
            f"transfer.trainable_stages={trainable_stages}: only used with "
            f"transfer.mode=finetune, got mode={mode!r} (set it to null)"
        )
    if (
        isinstance(trainable_stages, bool)
        or not isinstance(trainable_stages, int)
        or (trainable_stages < 0)
    ):
        raise ConfigError(
            "transfer.trainable_stages: expected null (all) or an integer >= 0, "
            f"got {trainable_stages!r}"
        )


def _check_stage_count(trainable_stages: int | None, num_stages: int, name: str):
    if trainable_stages is not None and trainable_stages > num_stages:
        raise ConfigError(
            f"transfer.trainable_stages: expected 0..{num_stages} ({name} has "
            f"{num_stages} stages), got {trainable_stages}"
        )


def parameter_groups(
    params: Mapping[str, Any], mode: str, trainable_stages: int | None = None
) -> dict[str, Any]:
    """Labels each parameter ``"head"``, ``"backbone"`` or ``"frozen"``.

    Backbone parameters are those under a top-level key ``backbone*`` or
    ``encoder``; everything else is ``head``. A backbone leaf's stage comes
    from its names (``stage_of``); one with neither a stem nor a stage name
    counts with the last stage.

    Args:
        params: the model's parameters (nested dicts; only names matter, so
            shapes or ``jax.ShapeDtypeStruct`` leaves do too).
        mode: ``scratch``, ``feature_extractor`` or ``finetune``.
        trainable_stages: ``finetune`` only: train the last N stages of each
            backbone; the stem and stages ``< num_stages - N`` are frozen (the
            stem trains only when ``N >= num_stages``). None: all train. At
            most the largest backbone's stage count; a backbone with fewer
            stages then trains whole.

    Returns:
        A pytree like ``params`` with a label string at each leaf.
    """
    check_mode(mode, trainable_stages)
    stages = backbone_stages(params)
    if stages:
        deepest = max(stages, key=stages.get)
        _check_stage_count(trainable_stages, stages[deepest], deepest)

    def label(path: Path) -> str:
        if not path or not is_backbone(path[0]):
            return "head"
        if mode == "feature_extractor":
            return "frozen"
        if mode == "scratch" or trainable_stages is None:
            return "backbone"
        num_stages = stages[path[0]]
        stage = stage_of(path)
        stage = num_stages - 1 if stage is None else stage
        return "frozen" if stage < num_stages - trainable_stages else "backbone"

    return jax.tree_util.tree_map_with_path(
        lambda key_path, _: label(tuple(_key_name(k) for k in key_path)), params
    )


def transfer_optimizer(
    base_tx: optax.GradientTransformation,
    mode: str,
    trainable_stages: int | None = None,
    backbone_lr_factor: float = 1.0,
) -> optax.GradientTransformation:
    """``base_tx`` for the head, ``base_tx`` scaled by ``backbone_lr_factor`` for
    the trainable backbone, exact zeros for frozen parameters.

    Built with ``optax.multi_transform``; the labels are computed from the
    params at ``init`` (so this can be built before the model exists). Each
    group keeps its own ``base_tx`` state: a global-norm clip inside ``base_tx``
    clips the head and the backbone separately, and frozen parameters hold no
    optimizer state (and get no weight decay).

    Raises:
        ConfigError: unknown mode, or a bad ``trainable_stages`` /
            ``backbone_lr_factor``.
    """
    check_mode(mode, trainable_stages)
    if (
        isinstance(backbone_lr_factor, bool)
        or not isinstance(backbone_lr_factor, (int, float))
        or not backbone_lr_factor > 0
    ):
        raise ConfigError(
            f"transfer.backbone_lr_factor: expected a number > 0, got "
            f"{backbone_lr_factor!r}"
        )

    def labels(params) -> Any:
        return parameter_groups(params, mode, trainable_stages)

    return optax.multi_transform(
        {
            "head": base_tx,
            "backbone": optax.chain(base_tx, optax.scale(float(backbone_lr_factor))),
            "frozen": optax.set_to_zero(),
        },
        labels,
    )


def frozen_stages_for(mode: str, num_stages: int, trainable_stages: int | None) -> int:
    """The value of a CNN's ``frozen_stages`` field matching ``parameter_groups``,
    so frozen stages also keep their BatchNorm statistics.

    ``feature_extractor``: ``num_stages``; ``finetune`` with ``trainable_stages=N``:
    ``num_stages - N``; otherwise 0.
    """
    check_mode(mode, trainable_stages)
    if mode == "feature_extractor":
        return num_stages
    if mode == "finetune" and trainable_stages is not None:
        _check_stage_count(trainable_stages, num_stages, "the model")
        return num_stages - trainable_stages
    return 0
