"""CenterNet-style one-stage detection (Zhou et al. 2019), 2D and 3D.

Targets, from the task's truth boxes (``DetectionTask.truth``: the augmented
instance map's extents), at the model's output stride ``R`` (``output_stride``: the input's size over
the heatmap's; 1 for ``medjax.models.detection.centernet``):

- each object's centre is its box's centre ``c``; on the output grid
  ``q = (c - (R - 1) / 2) / R``, splatted at the voxel it rounds to, ``p =
  round(q)`` (the paper floors; rounding keeps the peak on the voxel nearest the
  centre), as an unnormalised Gaussian (``ops.heatmaps.gaussian_peak_map``,
  the maximum where two overlap) with CenterNet's object-size radius:
  ``r = gaussian_radius(h, w, min_overlap)`` as its code computes it (the
  smallest of CornerNet's three cases, truncated to an integer; for volumes,
  the two smallest sides), ``sigma = (2 r + 1) / 6``;
- ``size``: the box's extent ``max - min + 1`` in input voxels; ``offset``:
  ``q - p``.

Loss: the penalty-reduced focal loss on the heatmap plus ``size_weight`` (0.1)
times L1 on the size and ``offset_weight`` (1) times L1 on the offset, read at
the centres only (``medjax.losses.detection``).

Decoding (jit): the sigmoid heatmap's (classes pooled by maximum: one
"lesion" class) ``max_detections`` highest local maxima of a ``peak_window``
max-pool (``ops.heatmaps.local_peaks``, in place of NMS), their size and offset
gathered there; centre ``(p + offset) R + (R - 1) / 2``, box ``centre -+ (size -
1) / 2`` clipped to the image; score the peak's probability. Points are the
boxes' centres.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from medjax import losses
from medjax.ops import boxes as box_ops
from medjax.ops.heatmaps import gaussian_peak_map, local_peaks
from medjax.tasks.base import Batch
from medjax.tasks.detection.task import DetectionTask


def gaussian_radius(height, width, min_overlap: float = 0.7):
    """CenterNet's ``gaussian_radius`` (its ``utils/image.py``), elementwise:
    the smallest of the three CornerNet cases' roots, as that code has them."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + jnp.sqrt(jnp.maximum(b1**2 - 4 * c1, 0))) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + jnp.sqrt(jnp.maximum(b2**2 - 16 * c2, 0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + jnp.sqrt(jnp.maximum(b3**2 - 4 * a3 * c3, 0))) / 2
    return jnp.minimum(jnp.minimum(r1, r2), r3)


@dataclasses.dataclass(frozen=True)
class CenterNetTask(DetectionTask):
    """Centre heatmap + size + offset (module docstring).

    Attributes:
        num_classes: heatmap channels; 1, one "lesion" class.
        focal_alpha / focal_beta: the focal loss's exponents (2, 4).
        size_weight / offset_weight: the L1 terms' weights (0.1, 1).
        min_overlap: CenterNet's IoU for the Gaussian radius (0.7).
        peak_window: the max-pool of decoding, odd (3).
        output_stride: the model's input size over its heatmap's, every axis
            (1 for ``models.detection.centernet``).
    """

    num_classes: int = 1
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    size_weight: float = 0.1
    offset_weight: float = 1.0
    min_overlap: float = 0.7
    peak_window: int = 3
    output_stride: int = 1

    def __post_init__(self):
        super().__post_init__()
        if self.num_classes != 1:
            raise ValueError(
                f"task.num_classes: CenterNet here has one lesion class, got {self.num_classes}"
            )
        if self.peak_window % 2 != 1:
            raise ValueError(f"task.peak_window: expected odd, got {self.peak_window}")

    def targets(
        self, batch: Batch, heat_shape: tuple[int, ...]
    ) -> dict[str, jnp.ndarray]:
        """``heatmap [B, *S', 1]``, ``indices [B, L, ndim]`` (int32, the centre
        voxels), ``size`` and ``offset [B, L, ndim]`` and ``valid [B, L]``."""
        truth = self.truth(batch)
        boxes, valid = truth["boxes"], truth["valid"]
        ndim = boxes.shape[-1] // 2
        stride = float(self.output_stride)
        centre = 0.5 * (boxes[..., :ndim] + boxes[..., ndim:])
        q = (centre - (stride - 1) / 2) / stride
        upper = jnp.asarray(heat_shape, jnp.float32) - 1
        p = jnp.clip(jnp.round(q), 0, upper)
        size = box_ops.box_size(boxes)
        sides = jnp.sort(size / stride, axis=-1)
        radius = jnp.floor(
            jnp.maximum(
                gaussian_radius(sides[..., 0], sides[..., 1], self.min_overlap), 0
            )
        )
        sigma = (2 * radius + 1) / 6
        heatmap = jax.vmap(lambda c, s, v: gaussian_peak_map(c, heat_shape, s, v))(
            p, sigma, valid
        )
        return {
            "heatmap": heatmap[..., None],
            "indices": p.astype(jnp.int32),
            "size": size,
            "offset": q - p,
            "valid": valid,
        }

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        heat = outputs["heatmap"]
        heat_shape = tuple(heat.shape[1:-1])
        target = self.targets(batch, heat_shape)
        valid = batch["valid"]
        focal = losses.penalty_reduced_focal_loss(
            heat,
            target["heatmap"],
            mask=valid,
            alpha=self.focal_alpha,
            beta=self.focal_beta,
        )
        size = losses.l1_at_points(
            _gather(outputs["size"], target["indices"]),
            target["size"],
            target["valid"],
            mask=valid,
        )
        offset = losses.l1_at_points(
            _gather(outputs["offset"], target["indices"]),
            target["offset"],
            target["valid"],
            mask=valid,
        )
        total = focal + self.size_weight * size + self.offset_weight * offset
        return losses.masked_mean(total, valid), {
            "loss": total,
            "heatmap_loss": focal,
            "size_loss": size,
            "offset_loss": offset,
        }

    def candidates(self, outputs: Any):
        heat = jax.nn.sigmoid(outputs["heatmap"].astype(jnp.float32)).max(-1)
        k, window = self.max_detections, self.peak_window
        indices, scores, valid = jax.vmap(lambda h: local_peaks(h, k, window=window))(
            heat
        )
        size = jnp.maximum(_gather(outputs["size"], indices), 1.0)
        offset = _gather(outputs["offset"], indices)
        stride = float(self.output_stride)
        centre = (indices + offset) * stride + (stride - 1) / 2
        half = (size - 1) / 2
        boxes = jnp.concatenate([centre - half, centre + half], -1)
        # Clipped to the image, as torchvision's detectors clip theirs: an
        # untrained offset or size may reach past the border.
        image_shape = tuple(int(s * self.output_stride) for s in heat.shape[1:])
        boxes = jax.vmap(lambda b: box_ops.clip_to_image(b, image_shape)[0])(boxes)
        return boxes, scores, valid


def _gather(maps: jnp.ndarray, indices: jnp.ndarray) -> jnp.ndarray:
    """``maps [B, *S, D]`` read at ``indices [B, N, ndim]`` -> ``[B, N, D]``."""
    return jax.vmap(lambda m, i: m[tuple(i.T)])(maps, indices)
