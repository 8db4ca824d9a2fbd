"""Copying arrays between variable trees by path: the one routine behind every
weight transfer (a checkpoint's subtree, an autoencoder's encoder, an RBM stack
into a deep belief net).

``plan_copy`` matches each target leaf under a target prefix with the leaf at the
same relative path under the matching source prefix, by shape, and reports what
it could not match; ``apply_copy`` writes the planned arrays in (with the
target's dtype and sharding). The source need not be in memory: only its shapes
are planned from, so ``medjax.engine.transfer`` plans from a checkpoint's
metadata and reads only the planned arrays. ``copy_weights`` does both for a
source in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from medjax.models.groups import Path, split_path, starts_with

COLLECTIONS = ("params", "batch_stats")
Plan = dict[str, dict[Path, Path]]  # {collection: {target path: source path}}


@dataclasses.dataclass
class LoadReport:
    """What a copy did, leaf by leaf.

    Paths are ``'/'``-joined and start with the collection (``params/head/kernel``,
    ``batch_stats/backbone/stem_norm/mean``).

    Attributes:
        source: where the arrays came from (a step directory, or a description).
        step: its step number (None if not a checkpoint step).
        subtrees: ``{target_prefix: source_prefix}`` used (``{"": ""}``: all).
        loaded: target paths copied from the source.
        mismatched: ``(target path, target shape, source shape)`` of arrays
            found under the same path with another shape (kept at init).
        missing: target paths under a target prefix that the source lacks
            (kept at init).
        untouched: target paths under no target prefix (kept at init).
        unused: source paths under a source prefix that no target took.
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
            + names(
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
                lines.append(f"{label}: {names(paths)}")
        return "\n".join(lines)


def flatten(tree: Any) -> dict[Path, Any]:
    """``{path: leaf}`` of a nested dict (empty sub-dicts have no leaves)."""
    if not isinstance(tree, Mapping):
        return {}
    return {
        tuple(str(k) for k in path): leaf
        for path, leaf in traverse_util.flatten_dict(tree).items()
    }


def flat_collections(variables: Mapping[str, Any]) -> dict[str, dict[Path, Any]]:
    """``{collection: {path: leaf}}`` of the collections that are copied."""
    return {c: flatten(variables.get(c, {})) for c in COLLECTIONS}


def plan_copy(
    targets: dict[str, dict[Path, Any]],
    sources: dict[str, dict[Path, Any]],
    subtrees: Mapping[str, str],
    report: LoadReport,
) -> Plan:
    """Which source leaf each target leaf takes, filling ``report``'s lists.

    A target leaf under several target prefixes uses the longest; a source leaf
    of another shape, or none, keeps the target at its initial value.

    Args:
        targets: ``flat_collections`` of the target variables.
        sources: the same of the source; leaves need only a ``shape``.
        subtrees: ``{target_prefix: source_prefix}``, ``'/'``-joined.
        report: receives ``mismatched``, ``missing``, ``untouched``, ``unused``
            and ``total_parameters``.
    """
    prefixes = {split_path(t): split_path(s) for t, s in subtrees.items()}
    plan: Plan = {c: {} for c in COLLECTIONS}
    used: set[tuple[str, Path]] = set()
    for collection in COLLECTIONS:
        for path, leaf in targets[collection].items():
            name = join((collection, *path))
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
            if source_shape != shape(leaf):
                report.mismatched.append((name, shape(leaf), source_shape))
                continue
            plan[collection][path] = source_path
    for collection in COLLECTIONS:
        for source_path in sources[collection]:
            in_prefix = any(starts_with(source_path, p) for p in prefixes.values())
            if in_prefix and (collection, source_path) not in used:
                report.unused.append(join((collection, *source_path)))
    report.total_parameters = sum(
        int(np.prod(shape(x))) for x in targets["params"].values()
    )
    return plan


def apply_copy(
    variables: Mapping[str, Any],
    plan: Plan,
    arrays: Mapping[str, Mapping[Path, Any]],
    report: LoadReport,
) -> dict[str, Any]:
    """``variables`` with every planned leaf replaced by ``arrays[collection]
    [source path]`` (cast to the target's dtype, placed with its sharding);
    fills ``report.loaded`` and the counts."""
    new_variables = dict(variables)
    for collection in COLLECTIONS:
        if not plan[collection]:
            continue
        flat = traverse_util.flatten_dict(variables[collection], keep_empty_nodes=True)
        for path, source_path in sorted(plan[collection].items()):
            value = arrays[collection][source_path]
            flat[path] = _like(value, flat[path])
            report.loaded.append(join((collection, *path)))
            report.loaded_values += int(np.size(value))
            if collection == "params":
                report.loaded_parameters += int(np.size(value))
        new_variables[collection] = traverse_util.unflatten_dict(flat)
    return new_variables


def copy_weights(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    subtrees: Mapping[str, str],
    *,
    source_name: str = "memory",
) -> tuple[dict[str, Any], LoadReport]:
    """Copies ``source``'s arrays into ``target`` by path (both in memory).

    Args:
        target: ``{"params": ..., "batch_stats": ...}`` to copy into (other
            collections are returned as they are).
        source: variables of the same form to copy from.
        subtrees: ``{target_prefix: source_prefix}``; ``{"": ""}``: all.
        source_name: what the report calls the source.

    Returns:
        The new target variables and the report (the caller decides whether a
        mismatch or a missing leaf is an error).
    """
    subtrees = dict(subtrees)
    report = LoadReport(source=source_name, step=None, subtrees=subtrees)
    sources = flat_collections(source)
    plan = plan_copy(flat_collections(target), sources, subtrees, report)
    return apply_copy(target, plan, sources, report), report


def shape(leaf: Any) -> tuple[int, ...]:
    """The shape of an array, or of a ``jax.ShapeDtypeStruct``."""
    return tuple(getattr(leaf, "shape", np.shape(leaf)))


def _like(value: Any, target: Any) -> Any:
    """``value`` with ``target``'s dtype, and its sharding if it is a jax.Array."""
    value = np.asarray(value).astype(np.dtype(target.dtype), copy=False)
    if isinstance(target, jax.Array):
        return jax.device_put(value, target.sharding)
    return jnp.asarray(value)


def join(path: Path) -> str:
    return "/".join(path)


def _longest_prefix(path: Path, prefixes: Mapping[Path, Path]) -> Path | None:
    matches = [p for p in prefixes if starts_with(path, p)]
    return max(matches, key=len) if matches else None


def _human(count: int) -> str:
    for threshold, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= threshold:
            return f"{count / threshold:.1f} {unit}"
    return str(count)


def names(items, limit: int = 6) -> str:
    """The first ``limit`` items, comma-separated, and how many more."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items) - limit} more)" if len(items) > limit else "")
