"""What every landmark localisation method shares: the data it reads, the
metrics in mm, the figures and the ``medjax-predict`` contract.

A method (heatmap regression, direct coordinate regression, orthogonal-plane
classification) subclasses :class:`LandmarkTask` and implements ``loss`` and
``locate(outputs) -> (points [B, L, ndim], scores [B, L])``, the jittable
decoding of a batch of model outputs to voxel coordinates and presence scores
in [0, 1]; a landmark is called present when its score exceeds
``presence_threshold``.

Metrics over a split (``medjax.metrics.landmarks``): ``mre`` (mm, the primary
metric, lower is better: ``primary_mode = "min"``), ``mre_voxels``, both per
landmark, ``sdr_2mm`` ... ``sdr_4mm``, ``false_positives`` and ``missed``.
"""

import dataclasses
import logging
from typing import Any

import jax.numpy as jnp
import numpy as np

from medjax import metrics
from medjax.data import schema as roles
from medjax.tasks.base import Batch, Task, TaskDataMismatch

logger = logging.getLogger("medjax")


@dataclasses.dataclass(frozen=True)
class LandmarkTask(Task):
    """Localisation of ``num_landmarks`` points of ``batch[points_key]``.

    Attributes:
        image_key: the ``image`` field ``[B, *S, C]`` the model reads.
        points_key: the ``points`` field ``[B, L, ndim]`` (voxel coordinates);
            its validity flags ``[B, L]`` (the role's ``valid`` key) say which
            landmarks are present. Absent ones enter no coordinate loss and no
            error metric.
        num_landmarks: ``L``.
        landmark_names: ``L`` names for metrics and figures (default
            ``landmark_<l>``; conf/task/landmarks.yaml names the phantoms').
        presence_threshold: a landmark is called present when its score is
            above it.
        spacing: mm per voxel (None: the data's, filled in by ``configure``;
            the "mm" metrics are in voxels when the data has none).
        spatial_dims: 2 or 3 (None: from the data's spacing, by ``configure``).
        num_figure_cases: cases drawn at each evaluation.
    """

    image_key: str = "image"
    points_key: str = "landmarks"
    num_landmarks: int = 6
    landmark_names: tuple[str, ...] | None = None
    presence_threshold: float = 0.5
    spacing: tuple[float, ...] | None = None
    spatial_dims: int | None = None
    num_figure_cases: int = 4

    primary_metric = "mre"
    primary_mode = "min"

    def __post_init__(self):
        for name in ("landmark_names", "spacing"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.num_landmarks < 1:
            raise ValueError(
                f"task.num_landmarks: expected >= 1, got {self.num_landmarks}"
            )
        if (
            self.landmark_names is not None
            and len(self.landmark_names) != self.num_landmarks
        ):
            raise ValueError(
                f"task.landmark_names: expected {self.num_landmarks} names, "
                f"got {list(self.landmark_names)}"
            )
        if not 0.0 <= self.presence_threshold <= 1.0:
            raise ValueError(
                f"task.presence_threshold: expected 0..1, got {self.presence_threshold}"
            )
        if self.spatial_dims not in (None, 2, 3):
            raise ValueError(
                f"task.spatial_dims: expected 2, 3 or null, got {self.spatial_dims}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        if self.landmark_names is not None:
            return self.landmark_names
        return tuple(f"landmark_{k}" for k in range(self.num_landmarks))

    def needs(self) -> dict[str, str]:
        return {self.image_key: roles.IMAGE, self.points_key: roles.POINTS}

    @property
    def valid_key(self) -> str:
        """The validity field of ``points_key`` (known once configured)."""
        held = dict(self.schema).get(self.points_key)
        if held is None or held.valid is None:
            raise ValueError(
                f"{type(self).__name__}: configure(data) first (the validity field "
                f"of {self.points_key!r} comes from the data's schema)"
            )
        return held.valid

    def configure(
        self, data: Any, *, task_name: str = "", data_name: str = ""
    ) -> "Task":
        """Checks the roles, then fills in ``spacing`` and ``spatial_dims``
        from the data; the method checks its own output count
        (``check_outputs``)."""
        task = super().configure(data, task_name=task_name, data_name=data_name)
        spacing = (
            self.spacing if self.spacing is not None else getattr(data, "spacing", None)
        )
        dims = self.spatial_dims or (len(spacing) if spacing is not None else None)
        if dims is None:
            raise TaskDataMismatch(
                f"task={task_name or type(self).__name__}: data={data_name or data.name} "
                "has no voxel spacing; set task.spatial_dims (2 or 3) and task.spacing"
            )
        if spacing is not None and len(spacing) != dims:
            raise TaskDataMismatch(
                f"task.spacing {tuple(spacing)} has {len(spacing)} values for "
                f"{dims}-D data"
            )
        if spacing is None:
            logger.warning(
                "landmarks: the data has no spacing; 'mm' metrics are in voxels"
            )
        task = dataclasses.replace(task, spacing=spacing, spatial_dims=dims)
        task.check_outputs(task_name or type(self).__name__)
        return task

    def check_outputs(self, task_name: str) -> None:
        """Raises ConfigError when the model's configured output count cannot
        serve this method (default: nothing to check)."""

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def truth(self, batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(points [B, L, ndim] float32, present [B, L] bool)``; padded
        examples have no present landmark."""
        present = batch[self.valid_key].astype(bool) & batch["valid"][:, None]
        return batch[self.points_key].astype(jnp.float32), present

    # -- what a method implements ------------------------------------------------------

    def locate(self, outputs: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(points [B, L, ndim], scores [B, L])`` from a batch of outputs."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------

    def host_outputs(self, outputs: Any, batch: Batch) -> Batch:
        points, scores = self.locate(outputs)
        truth, present = self.truth(batch)
        return {
            "points": points,
            "scores": scores,
            "truth": truth,
            "truth_valid": present,
            "image": batch[self.image_key][..., 0],
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return metrics.landmark_metrics(
            host_outputs["points"],
            host_outputs["truth"],
            host_outputs["truth_valid"],
            host_outputs["scores"] > self.presence_threshold,
            spacing=self.spacing,
            names=self.names,
        )

    def draw_cases(
        self, host_outputs: dict[str, np.ndarray], path: str, title: str = ""
    ) -> None:
        """The first ``num_figure_cases`` cases: true landmarks as circles,
        predicted ones (called present) as crosses, one colour per landmark."""
        from medjax.viz.landmarks import draw_landmarks

        chosen = slice(0, self.num_figure_cases)
        draw_landmarks(
            host_outputs["image"][chosen],
            host_outputs["truth"][chosen],
            host_outputs["truth_valid"][chosen],
            host_outputs["points"][chosen],
            host_outputs["scores"][chosen] > self.presence_threshold,
            path,
            names=self.names,
            spacing=self.spacing,
            title=title,
        )

    def prediction_role(self) -> str | None:
        return roles.POINTS

    @property
    def point_names(self) -> tuple[str, ...]:
        """The name of each of ``decode``'s points (``medjax-predict``'s
        ``name`` column)."""
        return self.names

    def decode(self, outputs: Any) -> dict[str, jnp.ndarray]:
        """One example's landmarks for ``medjax-predict``, traceable:
        ``points [L, ndim]`` voxel coordinates, ``scores [L]`` and ``valid [L]``
        (called present), named by ``point_names``. ``outputs`` are
        ``predict``'s for a batch of one."""
        points, scores = self.locate(outputs)
        return {
            "points": points[0],
            "scores": scores[0],
            "valid": scores[0] > self.presence_threshold,
        }
