"""Lesion detection by classifying pixels: a dense model's per-voxel lesion
probability, turned into scored candidates inside jit.

The model (``model=unet_small`` / ``unet_tiny``, two classes) is trained like a
binary segmentation against the instance map made binary, with a segmentation
loss of ``medjax.losses`` (Dice + cross-entropy by default, or focal): lesions
are a small share of the voxels and half the slices hold none, which these
losses are for.

Candidates (all in jit, ``medjax.ops.components``):

- every connected component (full connectivity) of ``probability >
  component_threshold`` gives ONE candidate, at its most probable voxel (the
  first in index order on a tie), scored by the component's maximum
  probability (``score="peak"``) or its mean (``score="component_mean"``), with
  the component's extent as its box;
- every local maximum (``ops.heatmaps.local_peaks``' max-pool rule) below the
  threshold is a candidate too, scored by its probability, its box the voxel
  itself: the weak responses that fill the FROC curve's high-FP end;
- the ``max_detections`` best are kept.

The candidate's point is that voxel (the peak), not its box's centre.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from medjax import losses
from medjax.ops.components import component_reductions, connected_components
from medjax.tasks.base import Batch
from medjax.tasks.detection.task import DetectionTask
from medjax.tasks.segmentation.task import LOSS_OPTIONS

SCORES = ("peak", "component_mean")


@dataclasses.dataclass(frozen=True)
class PixelDetectionTask(DetectionTask):
    """Per-voxel lesion probability -> candidates (module docstring).

    Attributes:
        num_classes: 2 (background, lesion): the model's logits per voxel.
        loss_function: a segmentation loss (``cross_entropy``, ``dice``,
            ``dice_ce``, ``focal``, ``tversky``).
        include_background / class_weights / gamma / alpha / beta: its options,
            as ``task=segmentation``.
        component_threshold: probability above which voxels form components.
        score: ``peak`` or ``component_mean``.
        peak_window: the local-maximum neighbourhood, odd.
    """

    num_classes: int = 2
    loss_function: str = "dice_ce"
    include_background: bool = False
    class_weights: tuple[float, ...] | None = None
    gamma: float = 2.0
    alpha: float = 0.3
    beta: float = 0.7
    component_threshold: float = 0.5
    score: str = "peak"
    peak_window: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(self.class_weights))
        if self.num_classes != 2:
            raise ValueError(
                f"task.num_classes: lesion detection has 2, got {self.num_classes}"
            )
        if self.loss_function not in LOSS_OPTIONS:
            raise ValueError(
                f"task.loss_function: expected one of {sorted(LOSS_OPTIONS)}, "
                f"got {self.loss_function!r}"
            )
        if self.score not in SCORES:
            raise ValueError(
                f"task.score: expected one of {SCORES}, got {self.score!r}"
            )
        if self.peak_window % 2 != 1:
            raise ValueError(f"task.peak_window: expected odd, got {self.peak_window}")

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        labels = (batch[self.instance_key] > 0).astype(jnp.int32)
        options = {
            name: getattr(self, name) for name in LOSS_OPTIONS[self.loss_function]
        }
        if options.get("class_weights") is not None:
            options["class_weights"] = jnp.asarray(
                options["class_weights"], jnp.float32
            )
        valid = batch["valid"]
        per_example = losses.SEGMENTATION_LOSSES[self.loss_function](
            outputs, labels, mask=valid, **options
        )
        return losses.masked_mean(per_example, valid), {"loss": per_example}

    def probability(self, outputs: jnp.ndarray) -> jnp.ndarray:
        """``[B, *S]`` lesion probability from the logits ``[B, *S, 2]``."""
        return jax.nn.softmax(outputs.astype(jnp.float32), axis=-1)[..., 1]

    def _find_one(self, probability: jnp.ndarray) -> dict[str, jnp.ndarray]:
        shape, ndim = probability.shape, probability.ndim
        inside = probability > self.component_threshold
        labels = connected_components(inside)
        reduced = component_reductions(labels, probability)
        flat = jnp.arange(probability.size, dtype=jnp.int32).reshape(shape)
        window = self.peak_window
        pooled = jax.lax.reduce_window(
            probability,
            -jnp.inf,
            jax.lax.max,
            (window,) * ndim,
            (1,) * ndim,
            [(window // 2, window // 2)] * ndim,
        )
        peak_outside = (probability >= pooled) & ~inside
        component_score = reduced["max"] if self.score == "peak" else reduced["mean"]
        chosen = jnp.where(inside, flat == reduced["first_argmax"], peak_outside)
        score_map = jnp.where(inside, component_score, probability)
        ranked = jnp.where(chosen, score_map, -jnp.inf).reshape(-1)
        scores, where = jax.lax.top_k(ranked, self.max_detections)
        points = jnp.stack(jnp.unravel_index(where, shape), -1).astype(jnp.float32)
        own = jnp.concatenate([points, points], -1)  # one voxel
        component_box = reduced["box"].reshape(-1, 2 * ndim)[where]
        boxes = jnp.where(inside.reshape(-1)[where][:, None], component_box, own)
        valid = jnp.isfinite(scores)
        return {
            "boxes": boxes,
            "scores": jnp.where(valid, scores, 0.0),
            "valid": valid,
            "points": points,
        }

    def detections(self, outputs: Any) -> dict[str, jnp.ndarray]:
        found = jax.vmap(self._find_one)(self.probability(outputs))
        found["valid"] = found["valid"] & (found["scores"] > self.min_score)
        return found

    def candidates(self, outputs: Any):
        found = self.detections(outputs)
        return found["boxes"], found["scores"], found["valid"]

    def candidate_points(self, outputs: Any, boxes: jnp.ndarray) -> jnp.ndarray:
        return self.detections(outputs)["points"]
