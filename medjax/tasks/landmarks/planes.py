"""Landmarks in volumes by classifying orthogonal planes (the lecture's way of
parsing 3D volumes; de Vos et al. 2017): for each landmark and each axis, a
softmax over the slices along that axis says which slice holds it
(``medjax.models.planes.OrthogonalPlanesLocator`` gives the logits).

Targets per axis: a Gaussian over slice indices around the true (sub-slice)
coordinate, ``target_sigma`` slices wide, normalised to sum to 1 (soft
targets); ``target_sigma=0`` puts all the mass on the nearest slice (hard
targets). The loss is the cross-entropy of the softmax against them, averaged
over the three axes and the landmarks present in the truth (absent ones are
masked out), plus ``presence_weight`` times the sigmoid cross-entropy of the
presence logits.

Decoding: per axis, the slice of highest probability refined by a parabola
through the log-probabilities of it and its neighbours
(``ops.heatmaps.argmax_refined`` on a 1D map, exact when the logits are a
parabola, as a Gaussian target makes them); the three coordinates are the
point. The score is the presence sigmoid.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from medjax import losses
from medjax.ops import heatmaps
from medjax.tasks.base import Batch, TaskDataMismatch
from medjax.tasks.landmarks.base import LandmarkTask


def slice_targets(coordinate: jnp.ndarray, count: int, sigma: float) -> jnp.ndarray:
    """Soft targets over ``count`` slices for coordinates ``[...]``.

    Returns:
        ``[..., count]`` summing to 1: a normalised Gaussian of width ``sigma``
        slices around each coordinate, or (``sigma <= 0``) one-hot at its
        nearest slice.
    """
    index = jnp.arange(count, dtype=jnp.float32)
    if sigma <= 0:
        nearest = jnp.clip(jnp.round(coordinate), 0, count - 1)
        return (index == nearest[..., None]).astype(jnp.float32)
    logits = -0.5 * jnp.square((index - coordinate[..., None]) / sigma)
    return jax.nn.softmax(logits, axis=-1)


def decode_axis(logits: jnp.ndarray) -> jnp.ndarray:
    """Sub-slice coordinates ``[B, L]`` from one axis's logits ``[B, S, L]``."""
    probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
    points, _ = jax.vmap(heatmaps.argmax_refined)(probabilities)  # [B, L, 1]
    return points[..., 0]


@dataclasses.dataclass(frozen=True)
class PlaneLandmarkTask(LandmarkTask):
    """Orthogonal-plane classification (see the module docstring); volumes only.

    Attributes (besides :class:`LandmarkTask`'s):
        target_sigma: width of the soft targets in slices (0: hard targets).
        presence_weight: weight of the presence cross-entropy.
    """

    target_sigma: float = 1.0
    presence_weight: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.target_sigma < 0:
            raise ValueError(
                f"task.target_sigma: expected >= 0, got {self.target_sigma}"
            )
        if self.presence_weight < 0:
            raise ValueError(
                f"task.presence_weight: expected >= 0, got {self.presence_weight}"
            )

    def check_outputs(self, task_name: str) -> None:
        if self.spatial_dims != 3:
            raise TaskDataMismatch(
                f"task={task_name} classifies the planes of volumes; the data is "
                f"{self.spatial_dims}-D (use data=phantoms3d)"
            )

    def loss(self, outputs, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        *axis_logits, presence_logits = outputs
        points, present = self.truth(batch)
        cross_entropy = 0.0
        for axis, logits in enumerate(axis_logits):
            logits = jnp.moveaxis(logits.astype(jnp.float32), 1, -1)  # [B, L, S]
            target = slice_targets(
                points[..., axis], logits.shape[-1], self.target_sigma
            )
            cross_entropy = cross_entropy + optax.softmax_cross_entropy(logits, target)
        cross_entropy = cross_entropy / len(axis_logits)  # [B, L]
        weights = present.astype(jnp.float32)
        localisation = jnp.sum(cross_entropy * weights, -1) / jnp.maximum(
            weights.sum(-1), 1.0
        )
        presence = optax.sigmoid_binary_cross_entropy(
            presence_logits.astype(jnp.float32), present.astype(jnp.float32)
        ).mean(-1)
        per_example = localisation + self.presence_weight * presence
        per_example = jnp.where(batch["valid"], per_example, 0.0)
        return losses.masked_mean(per_example, batch["valid"]), {"loss": per_example}

    def locate(self, outputs) -> tuple[jnp.ndarray, jnp.ndarray]:
        *axis_logits, presence_logits = outputs
        points = jnp.stack([decode_axis(logits) for logits in axis_logits], axis=-1)
        return points, jax.nn.sigmoid(presence_logits.astype(jnp.float32))
