"""Landmarks by direct coordinate regression, the baseline: a CNN classifier's
dense head gives ``L * ndim`` coordinates and ``L`` presence logits.

Coordinates are regressed normalised to [-1, 1] over the image
(``2 i / (S - 1) - 1`` per axis), so one learning rate suits every image size;
the loss is the L1 (default) or squared error of the normalised coordinates of
the landmarks present in the truth (absent ones are masked out), plus
``presence_weight`` times the sigmoid cross-entropy of the presence logits
(every landmark: presence is what they learn). A landmark's score is the
sigmoid of its presence logit.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from medjax import losses
from medjax.errors import ConfigError
from medjax.tasks.base import Batch
from medjax.tasks.landmarks.base import LandmarkTask

COORDINATE_LOSSES = ("l1", "mse")


@dataclasses.dataclass(frozen=True)
class DirectLandmarkTask(LandmarkTask):
    """Direct regression (see the module docstring).

    Attributes (besides :class:`LandmarkTask`'s):
        num_classes: the model's outputs, ``num_landmarks * (ndim + 1)``
            (checked once the data says ``ndim``: 18 for six 2D landmarks,
            24 in 3D).
        image_shape: the spatial shape ``S`` coordinates are normalised by
            (None: the data's, from its first training example, by
            ``configure``).
        coordinate_loss: ``l1`` or ``mse``.
        presence_weight: weight of the presence cross-entropy.
    """

    num_classes: int = 18
    image_shape: tuple[int, ...] | None = None
    coordinate_loss: str = "l1"
    presence_weight: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.image_shape is not None:
            object.__setattr__(
                self, "image_shape", tuple(int(s) for s in self.image_shape)
            )
        if self.coordinate_loss not in COORDINATE_LOSSES:
            raise ValueError(
                f"task.coordinate_loss: expected one of {COORDINATE_LOSSES}, "
                f"got {self.coordinate_loss!r}"
            )
        if self.presence_weight < 0:
            raise ValueError(
                f"task.presence_weight: expected >= 0, got {self.presence_weight}"
            )

    def configure(self, data, *, task_name: str = "", data_name: str = ""):
        task = super().configure(data, task_name=task_name, data_name=data_name)
        if task.image_shape is None:
            example = data.convert(data.source(data.train_split)[0])
            shape = tuple(
                int(s) for s in example[self.image_key].shape[: task.spatial_dims]
            )
            task = dataclasses.replace(task, image_shape=shape)
        return task

    def check_outputs(self, task_name: str) -> None:
        needed = self.num_landmarks * (self.spatial_dims + 1)
        if self.num_classes != needed:
            raise ConfigError(
                f"task={task_name}: task.num_classes={self.num_classes}, but "
                f"{self.num_landmarks} {self.spatial_dims}-D landmarks need "
                f"{self.num_landmarks} x ({self.spatial_dims} + 1) = {needed} outputs "
                f"(coordinates and presence): set task.num_classes={needed}"
            )

    def _scale(self) -> jnp.ndarray:
        if self.image_shape is None:
            raise ValueError("DirectLandmarkTask: configure(data) first (image_shape)")
        return jnp.asarray([max(s - 1, 1) for s in self.image_shape], jnp.float32)

    def _split(self, outputs: jnp.ndarray):
        """Normalised coordinates ``[B, L, ndim]`` and presence logits ``[B, L]``."""
        outputs = outputs.astype(jnp.float32)
        count, dims = self.num_landmarks, self.spatial_dims
        coordinates = outputs[:, : count * dims].reshape(-1, count, dims)
        return coordinates, outputs[:, count * dims :]

    def loss(self, outputs: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        coordinates, presence_logits = self._split(outputs)
        points, present = self.truth(batch)
        target = 2.0 * points / self._scale() - 1.0
        error = coordinates - target
        error = jnp.abs(error) if self.coordinate_loss == "l1" else jnp.square(error)
        per_landmark = jnp.mean(error, -1)  # [B, L]
        weights = present.astype(jnp.float32)
        coordinate = jnp.sum(per_landmark * weights, -1) / jnp.maximum(
            weights.sum(-1), 1.0
        )
        presence = optax.sigmoid_binary_cross_entropy(
            presence_logits, present.astype(jnp.float32)
        ).mean(-1)
        per_example = coordinate + self.presence_weight * presence
        per_example = jnp.where(batch["valid"], per_example, 0.0)
        return losses.masked_mean(per_example, batch["valid"]), {"loss": per_example}

    def locate(self, outputs: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        coordinates, presence_logits = self._split(outputs)
        points = (coordinates + 1.0) * 0.5 * self._scale()
        return points, jax.nn.sigmoid(presence_logits)
