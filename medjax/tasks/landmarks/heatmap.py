"""Landmarks by heatmap regression (Payer et al. 2016, 2019): a dense network
(the U-Net) predicts one Gaussian heatmap per landmark, and each map's maximum,
refined to sub-voxel precision, is the landmark.

Targets are ``ops.heatmaps.gaussian_heatmaps`` of the true points (peak 1,
``sigma`` voxels). The loss is the mean squared error per voxel and landmark,
averaged over the landmarks a map is asked of. A landmark absent from the
truth has, by default, an all-zero target (``absent_target="zero"``): nowhere
is the landmark is the truth of its map, and it is what teaches the peak
height its meaning as a presence score; ``"masked"`` leaves absent maps out of
the loss entirely (then a low peak cannot be learned and presence is
unreliable).

The MSE's target is mostly background, so the foreground voxels can be
weighted up (``foreground_weight``: each voxel's squared error is weighted by
``1 + (w - 1) * target``), which speeds up learning the peaks.

Decoding (``decoding``): ``argmax`` (the default: the integer maximum, then a
parabola through the log of the map and its neighbours, per axis:
``ops.heatmaps.argmax_refined``, exact for Gaussians), ``argmax_linear`` (the
parabola through the values) or ``soft_argmax`` (the expectation under a
spatial softmax of ``soft_argmax_beta * map``). A landmark's score is its peak
value clipped to [0, 1].
"""

import dataclasses

import jax
import jax.numpy as jnp

from medjax import losses
from medjax.errors import ConfigError
from medjax.ops import heatmaps
from medjax.tasks.base import Batch
from medjax.tasks.landmarks.base import LandmarkTask

DECODINGS = ("argmax", "argmax_linear", "soft_argmax")
ABSENT_TARGETS = ("zero", "masked")


@dataclasses.dataclass(frozen=True)
class HeatmapLandmarkTask(LandmarkTask):
    """Heatmap regression (see the module docstring).

    Attributes (besides :class:`LandmarkTask`'s):
        num_classes: the model's output channels, which must equal
            ``num_landmarks`` (the model config reads it).
        sigma: the target Gaussians' standard deviation, in voxels.
        foreground_weight: weight of a voxel's squared error at a target's
            peak (1: plain MSE).
        absent_target: ``zero`` or ``masked`` (absent landmarks' maps).
        decoding: ``argmax``, ``argmax_linear`` or ``soft_argmax``.
        soft_argmax_beta: the soft-argmax's inverse temperature.
    """

    num_classes: int = 6
    sigma: float = 2.0
    foreground_weight: float = 1.0
    absent_target: str = "zero"
    decoding: str = "argmax"
    soft_argmax_beta: float = 50.0

    def __post_init__(self):
        super().__post_init__()
        if self.sigma <= 0:
            raise ValueError(f"task.sigma: expected > 0 voxels, got {self.sigma}")
        if self.foreground_weight < 1:
            raise ValueError(
                f"task.foreground_weight: expected >= 1, got {self.foreground_weight}"
            )
        if self.decoding not in DECODINGS:
            raise ValueError(
                f"task.decoding: expected one of {DECODINGS}, got {self.decoding!r}"
            )
        if self.absent_target not in ABSENT_TARGETS:
            raise ValueError(
                f"task.absent_target: expected one of {ABSENT_TARGETS}, "
                f"got {self.absent_target!r}"
            )

    def check_outputs(self, task_name: str) -> None:
        if self.num_classes != self.num_landmarks:
            raise ConfigError(
                f"task={task_name}: task.num_classes={self.num_classes} must equal "
                f"task.num_landmarks={self.num_landmarks} (one heatmap per landmark)"
            )

    def targets(self, batch: Batch, shape) -> jnp.ndarray:
        """``[B, *S, L]`` Gaussian heatmaps; absent landmarks' maps are 0."""
        points, present = self.truth(batch)
        return jax.vmap(
            lambda p, v: heatmaps.gaussian_heatmaps(p, shape, self.sigma, v)
        )(points, present)

    def loss(self, outputs: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        predicted = outputs.astype(jnp.float32)
        spatial = predicted.shape[1:-1]
        target = self.targets(batch, spatial)
        weight = 1.0 + (self.foreground_weight - 1.0) * target
        axes = tuple(range(1, 1 + len(spatial)))
        per_map = jnp.mean(weight * jnp.square(predicted - target), axis=axes)  # [B, L]
        _, present = self.truth(batch)
        if self.absent_target == "masked":
            asked = present.astype(jnp.float32)
        else:
            asked = jnp.broadcast_to(batch["valid"][:, None], present.shape).astype(
                jnp.float32
            )
        per_example = jnp.sum(per_map * asked, -1) / jnp.maximum(
            jnp.sum(asked, -1), 1.0
        )
        per_example = jnp.where(batch["valid"], per_example, 0.0)
        return losses.masked_mean(per_example, batch["valid"]), {"loss": per_example}

    def locate(self, outputs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        maps = outputs.astype(jnp.float32)
        if self.decoding == "soft_argmax":
            points = jax.vmap(lambda m: heatmaps.soft_argmax(m, self.soft_argmax_beta))(
                maps
            )
            flat = maps.reshape(maps.shape[0], -1, maps.shape[-1])
            peaks = jnp.max(flat, axis=1)
        else:
            log_domain = self.decoding == "argmax"
            points, peaks = jax.vmap(
                lambda m: heatmaps.argmax_refined(m, log_domain=log_domain)
            )(maps)
        return points, jnp.clip(peaks, 0.0, 1.0)
