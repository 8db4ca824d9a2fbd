"""Parameter groups: which parts of a model are its backbone, in which stages, and
which are its head, declared once by the model itself.

A model that can serve as a feature extractor subclasses :class:`Transferable`
and implements ``parameter_groups()``, returning :class:`ParameterGroups`: one
:class:`Backbone` per feature extractor, each an ordered tuple of stages (the
input side first), each stage a tuple of ``'/'``-joined subtree paths inside
every variable collection (``params``, ``batch_stats``). Everything under no
declared path is head. Transfer learning (``medjax.engine.transfer``) freezes,
fine-tunes and slows down parameters by this declaration only, never by name
patterns, and ``with_frozen_statistics`` says how the model keeps the
normalisation statistics of its first stages fixed.

A model that does not subclass :class:`Transferable` has no backbone
(:func:`groups_of` returns an empty declaration): it can be loaded and
fine-tuned whole, but not frozen in part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

Path = tuple[str, ...]


def split_path(path: str) -> Path:
    """``'backbone/stem_conv'`` -> ``('backbone', 'stem_conv')``."""
    return tuple(part for part in path.split("/") if part)


def starts_with(path: Path, prefix: Path) -> bool:
    return path[: len(prefix)] == prefix


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One feature extractor of a model.

    Attributes:
        name: how messages call it (``backbone``, ``backbone_0``, ``encoder``).
        stages: subtree paths of each stage, the input side first; the stem
            belongs to the first stage (it trains only when all stages do).
    """

    name: str
    stages: tuple[tuple[str, ...], ...]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_of(self, path: Path) -> int | None:
        """The stage whose declared subtree holds the leaf at ``path`` (the
        longest matching declared path wins); None if none does."""
        best, best_length = None, -1
        for index, subtrees in enumerate(self.stages):
            for subtree in subtrees:
                prefix = split_path(subtree)
                if starts_with(path, prefix) and len(prefix) > best_length:
                    best, best_length = index, len(prefix)
        return best


@dataclasses.dataclass(frozen=True)
class ParameterGroups:
    """A model's backbones; every parameter under none of them is head."""

    backbones: tuple[Backbone, ...] = ()

    @property
    def num_stages(self) -> int:
        """Stages of the deepest backbone (0 without a backbone)."""
        return max((b.num_stages for b in self.backbones), default=0)

    @property
    def deepest(self) -> Backbone | None:
        if not self.backbones:
            return None
        return max(self.backbones, key=lambda b: b.num_stages)

    def locate(self, path: Path) -> tuple[Backbone, int] | None:
        """``(backbone, stage)`` of the leaf at ``path`` (inside one collection),
        or None for a head leaf."""
        found, found_length = None, -1
        for backbone in self.backbones:
            stage = backbone.stage_of(path)
            if stage is None:
                continue
            length = max(
                len(split_path(p))
                for p in backbone.stages[stage]
                if starts_with(path, split_path(p))
            )
            if length > found_length:
                found, found_length = (backbone, stage), length
        return found


class Transferable:
    """Mixin of models that declare their parameter groups.

    Subclass it next to ``flax.linen.Module`` (``class M(nn.Module,
    Transferable)``) and implement :meth:`parameter_groups`; override
    :meth:`with_frozen_statistics` when the backbone has running statistics.
    """

    def parameter_groups(self) -> ParameterGroups:
        """The model's backbones and their stages (from its fields only, so it
        works on an unbound module)."""
        raise NotImplementedError(f"{type(self).__name__}.parameter_groups")

    def with_frozen_statistics(self, num_stages: int) -> Any | None:
        """This model with the normalisation statistics of its first
        ``num_stages`` backbone stages fixed in training (the stem included),
        or None if it cannot fix them.

        The default suits backbones without running statistics (dense layers,
        group or instance norm): nothing to fix, so the model itself."""
        return self


def groups_of(model: Any) -> ParameterGroups:
    """``model.parameter_groups()``, or no backbone for a model that declares
    none."""
    if isinstance(model, Transferable):
        return model.parameter_groups()
    return ParameterGroups()


def single_stage(name: str, subtrees: Iterable[str]) -> Backbone:
    """A backbone of one stage: these subtrees, trained or frozen together."""
    return Backbone(name, (tuple(subtrees),))


def one_stage_each(name: str, subtrees: Sequence[str]) -> Backbone:
    """A backbone whose stages are these subtrees, in order."""
    return Backbone(name, tuple((s,) for s in subtrees))
