"""Freezing and slowing down parts of a model, by the parameter groups it
declares (:mod:`medjax.models.groups`).

``label_parameters`` labels every parameter ``head``, ``backbone`` or ``frozen``
and ``transfer_optimizer`` routes the labels through ``optax.multi_transform``:
frozen parameters get exact zero updates (no weight decay either), the
backbone's updates are scaled by ``backbone_lr_factor``. The normalisation
statistics of frozen stages are frozen by the model itself
(``prepare_model``, through the model's ``with_frozen_statistics``).

Modes:

- ``scratch``: nothing loaded, everything trains (the baseline);
- ``feature_extractor``: every backbone is frozen, only the head trains;
- ``finetune``: everything trains; with ``trainable_stages=N`` only the last
  ``N`` stages of each backbone (and the head) train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

from medjax.errors import ConfigError
from medjax.models.groups import ParameterGroups, groups_of

MODES = ("scratch", "feature_extractor", "finetune")
GROUPS = ("head", "backbone", "frozen")


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


def _check_groups(groups: ParameterGroups, mode: str, trainable_stages: int | None):
    """A mode that freezes part of a backbone needs one, with enough stages."""
    deepest = groups.deepest
    partial = mode == "feature_extractor" or trainable_stages is not None
    if deepest is None:
        if partial:
            raise ConfigError(
                f"transfer.mode={mode}: the model declares no backbone to freeze "
                "(only models with parameter_groups(), see medjax.models.groups)"
            )
        return
    if trainable_stages is not None and trainable_stages > deepest.num_stages:
        raise ConfigError(
            f"transfer.trainable_stages: expected 0..{deepest.num_stages} "
            f"({deepest.name} has {deepest.num_stages} stages), got {trainable_stages}"
        )


def label_parameters(
    params: Mapping[str, Any],
    groups: ParameterGroups,
    mode: str,
    trainable_stages: int | None = None,
) -> Any:
    """Labels each parameter ``"head"``, ``"backbone"`` or ``"frozen"``.

    Args:
        params: the model's parameters (nested dicts; only paths matter, so
            shapes or ``jax.ShapeDtypeStruct`` leaves do too).
        groups: the model's declaration (``groups_of(model)``).
        mode: ``scratch``, ``feature_extractor`` or ``finetune``.
        trainable_stages: ``finetune`` only: train the last N stages of each
            backbone; stages ``< num_stages - N`` are frozen (the stem, in the
            first stage, trains only when ``N >= num_stages``). None: all train.
            At most the deepest backbone's stage count; a backbone with fewer
            stages then trains whole.

    Returns:
        A pytree like ``params`` with a label string at each leaf.

    Raises:
        ConfigError: a bad mode or stage count, or a partial freeze of a model
            without a backbone.
    """
    check_mode(mode, trainable_stages)
    _check_groups(groups, mode, trainable_stages)

    def label(key_path) -> str:
        found = groups.locate(tuple(str(getattr(k, "key", k)) for k in key_path))
        if found is None:
            return "head"
        backbone, stage = found
        if mode == "feature_extractor":
            return "frozen"
        if mode == "scratch" or trainable_stages is None:
            return "backbone"
        frozen = stage < backbone.num_stages - trainable_stages
        return "frozen" if frozen else "backbone"

    return jax.tree_util.tree_map_with_path(lambda k, _: label(k), params)


def transfer_optimizer(
    base_tx: optax.GradientTransformation,
    groups: ParameterGroups,
    mode: str,
    trainable_stages: int | None = None,
    backbone_lr_factor: float = 1.0,
) -> optax.GradientTransformation:
    """``base_tx`` for the head, ``base_tx`` scaled by ``backbone_lr_factor`` for
    the trainable backbone, exact zeros for frozen parameters.

    Built with ``optax.multi_transform``; the labels are computed from the
    params at ``init`` (so this can be built before the model is initialised).
    Each group keeps its own ``base_tx`` state: a global-norm clip inside
    ``base_tx`` clips the head and the backbone separately, and frozen
    parameters hold no optimizer state (and get no weight decay).

    Raises:
        ConfigError: unknown mode, or a bad ``trainable_stages`` /
            ``backbone_lr_factor``.
    """
    check_mode(mode, trainable_stages)
    _check_groups(groups, mode, trainable_stages)
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
        return label_parameters(params, groups, mode, trainable_stages)

    return optax.multi_transform(
        {
            "head": base_tx,
            "backbone": optax.chain(base_tx, optax.scale(float(backbone_lr_factor))),
            "frozen": optax.set_to_zero(),
        },
        labels,
    )


def frozen_stages_for(mode: str, num_stages: int, trainable_stages: int | None) -> int:
    """How many first backbone stages are frozen, matching ``label_parameters``
    (the value of a CNN's ``frozen_stages`` field).

    ``feature_extractor``: ``num_stages``; ``finetune`` with ``trainable_stages=N``:
    ``num_stages - N``; otherwise 0.
    """
    check_mode(mode, trainable_stages)
    if mode == "feature_extractor":
        return num_stages
    if mode == "finetune" and trainable_stages is not None:
        if trainable_stages > num_stages:
            raise ConfigError(
                f"transfer.trainable_stages: expected 0..{num_stages} (the model has "
                f"{num_stages} stages), got {trainable_stages}"
            )
        return num_stages - trainable_stages
    return 0


def prepare_model(model: Any, mode: str, trainable_stages: int | None = None) -> Any:
    """``model`` with the normalisation statistics of the stages that
    ``mode`` freezes held fixed (through its ``with_frozen_statistics``).

    Raises:
        ConfigError: a bad mode or stage count, or a model that cannot hold
            the statistics of its frozen stages fixed.
    """
    check_mode(mode, trainable_stages)
    groups = groups_of(model)
    _check_groups(groups, mode, trainable_stages)
    frozen = frozen_stages_for(mode, groups.num_stages, trainable_stages)
    if not frozen:
        return model
    prepared = model.with_frozen_statistics(frozen)
    if prepared is None:
        raise ConfigError(
            f"transfer.mode={mode}: model {type(model).__name__} cannot freeze the "
            "normalisation statistics of its frozen stages (use a norm without "
            "running statistics, or train them: transfer.mode=finetune)"
        )
    return prepared
