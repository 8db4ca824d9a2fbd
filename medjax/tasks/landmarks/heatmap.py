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

``loss_function="softmax"`` instead reads each output map as logits of a
distribution over the voxels plus one "absent" bin whose logit is fixed at 0:
the cross-entropy against the normalised Gaussian of a present landmark (the
absent bin's target 0), or against the absent bin alone for an absent one. Its
gradients do not vanish on a flat map, so it learns where the peaks are far
sooner than the MSE; the score is the probability mass off the absent bin, and
decoding works on the maps ``exp(logit - max)``, whose log-domain parabola is
the logits'.

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
LOSS_FUNCTIONS = ("mse", "softmax")


@dataclasses.dataclass(frozen=True)
class HeatmapLandmarkTask(LandmarkTask):
    """Heatmap regression (see the module docstring).

    Attributes (besides :class:`LandmarkTask`'s):
        num_classes: the model's output channels, which must equal
            ``num_landmarks`` (the model config reads it).
        sigma: the target Gaussians' standard deviation, in voxels.
        foreground_weight: weight of a voxel's squared error at a target's
            peak (1: plain MSE).
        absent_target: ``zero`` or ``masked`` (absent landmarks' maps; MSE).
        loss_function: ``mse`` (regress the Gaussians) or ``softmax`` (a
            distribution over voxels and an absent bin).
        decoding: ``argmax``, ``argmax_linear`` or ``soft_argmax``.
        soft_argmax_beta: the soft-argmax's inverse temperature.
    """

    num_classes: int = 6
    sigma: float = 2.0
    foreground_weight: float = 1.0
    absent_target: str = "zero"
    loss_function: str = "mse"
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
        if self.loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"task.loss_function: expected one of {LOSS_FUNCTIONS}, "
                f"got {self.loss_function!r}"
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

    def _softmax_loss(self, logits: jnp.ndarray, batch: Batch) -> jnp.ndarray:
        """Per-example cross-entropy over voxels and the absent bin ``[B]``."""
        spatial = logits.shape[1:-1]
        target = self.targets(batch, spatial)  # [B, *S, L], absent: 0
        flat = logits.reshape(logits.shape[0], -1, logits.shape[-1])  # [B, V, L]
        target = target.reshape(flat.shape)
        mass = jnp.sum(target, axis=1, keepdims=True)
        target = target / jnp.maximum(mass, 1e-12)
        absent = (mass[:, 0] == 0).astype(jnp.float32)  # [B, L]
        # log of the normaliser over the voxels and the absent bin (logit 0)
        peak = jnp.maximum(jnp.max(flat, axis=1), 0.0)
        normaliser = peak + jnp.log(
            jnp.sum(jnp.exp(flat - peak[:, None]), axis=1) + jnp.exp(-peak)
        )
        voxels = -jnp.sum(target * flat, axis=1) + normaliser * (1 - absent)
        per_map = voxels + absent * normaliser  # -log p(absent) = normaliser - 0
        asked = jnp.broadcast_to(batch["valid"][:, None], absent.shape)
        per_map = jnp.where(asked, per_map, 0.0)
        return jnp.sum(per_map, -1) / per_map.shape[-1]

    def loss(self, outputs: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        if self.loss_function == "softmax":
            per_example = self._softmax_loss(outputs.astype(jnp.float32), batch)
            per_example = jnp.where(batch["valid"], per_example, 0.0)
            return losses.masked_mean(per_example, batch["valid"]), {
                "loss": per_example
            }
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
        if self.loss_function == "softmax":
            flat = maps.reshape(maps.shape[0], -1, maps.shape[-1])
            peak = jnp.max(flat, axis=1)  # [B, L]
            # probability off the absent bin: 1 - 1 / (1 + sum exp(logits))
            total = jax.nn.logsumexp(flat, axis=1)
            present = jax.nn.sigmoid(total)
            # exp(logit - max) peaks at 1: its log-domain parabola is the logits'
            maps = jnp.exp(
                maps - peak.reshape(peak.shape[0], *[1] * (maps.ndim - 2), -1)
            )
            points, _ = jax.vmap(lambda m: heatmaps.argmax_refined(m))(maps)
            return points, present
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
