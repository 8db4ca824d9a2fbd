"""The second stage of a two-stage detector: RoIAlign features of the
proposals, a box head for class logits and per-class box refinement, and the
final detections decoded from it with a fixed number of outputs.

Boxes follow ``medjax.ops.boxes``; deltas ``medjax.ops.detection`` with the box
head's weights (``(10, 5)``, torchvision's ``(10, 10, 5, 5)``).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.ops import boxes as boxes_lib
from medjax.ops import detection
from medjax.ops.roi_align import roi_align

BOX_WEIGHTS = (10.0, 5.0)


def level_of_boxes(boxes: jnp.ndarray, level_sizes: Sequence[float]) -> jnp.ndarray:
    """The pyramid level each box is pooled from: the level whose typical
    anchor size is nearest the box's (geometric mean) side on a log scale, the
    rule torchvision's ``LevelMapper`` applies with a canonical size.

    Args:
        boxes: ``[..., 2 * ndim]``.
        level_sizes: one typical size per level, finest first.

    Returns:
        ``[...]`` int32 level indices.
    """
    sides = jnp.maximum(boxes_lib.box_size(boxes), 1.0)
    log_side = jnp.mean(jnp.log(sides), axis=-1)
    targets = jnp.log(jnp.asarray(level_sizes, jnp.float32))
    return jnp.argmin(jnp.abs(log_side[..., None] - targets), axis=-1).astype(jnp.int32)


def pool_rois(
    levels: Sequence[jnp.ndarray],
    strides: Sequence[int],
    rois: jnp.ndarray,
    *,
    output_size: tuple[int, ...],
    level_sizes: Sequence[float] | None = None,
    sampling_ratio: int = 2,
) -> jnp.ndarray:
    """RoIAlign features of every box, each from its level.

    Args:
        levels: feature maps ``[B, *F_l, C]`` (the same ``C``), finest first.
        strides: image voxels per cell of each level.
        rois: ``[B, R, 2 * ndim]`` in image voxels.
        output_size: bins per axis (static).
        level_sizes: typical box side of each level (:func:`level_of_boxes`);
            needed with more than one level.
        sampling_ratio: of ``ops.roi_align``.

    Returns:
        ``[B, R, *output_size, C]``.
    """
    pooled = [
        jax.vmap(
            lambda f, b, s=stride: roi_align(
                f, b, output_size, spatial_scale=1.0 / s, sampling_ratio=sampling_ratio
            )
        )(features, rois)
        for features, stride in zip(levels, strides)
    ]
    if len(pooled) == 1:
        return pooled[0]
    # Every level is pooled for every box (R is small), then each box keeps its
    # own: simpler than a gather and as cheap at these sizes.
    chosen = level_of_boxes(rois, level_sizes)
    expand = (slice(None), slice(None)) + (None,) * (len(output_size) + 1)
    result = pooled[0]
    for index, values in enumerate(pooled[1:], start=1):
        result = jnp.where((chosen == index)[expand], values, result)
    return result


class BoxHead(nn.Module):
    """Two fully connected layers over the flattened RoI features (torchvision's
    ``TwoMLPHead``), then class logits and box deltas.

    Attributes:
        num_classes: foreground classes ``C``; the logits have ``C + 1``,
            background first.
        width: of the two hidden layers.
        class_agnostic: one set of deltas for all classes.
    """

    num_classes: int
    width: int = 128
    class_agnostic: bool = False

    @nn.compact
    def __call__(self, features: jnp.ndarray):
        """Maps ``[B, R, *bins, C]`` to ``(logits [B, R, C + 1], deltas [B, R,
        C or 1, 2 * ndim])``."""
        ndim = features.ndim - 3
        batch, count = features.shape[:2]
        x = features.reshape(batch, count, -1)
        x = nn.relu(nn.Dense(self.width, name="fc6")(x))
        x = nn.relu(nn.Dense(self.width, name="fc7")(x))
        # torchvision: N(0, 0.01) for the scores and N(0, 0.001) for the deltas.
        logits = nn.Dense(
            self.num_classes + 1,
            kernel_init=nn.initializers.normal(0.01),
            name="class_logits",
        )(x)
        sets = 1 if self.class_agnostic else self.num_classes
        deltas = nn.Dense(
            sets * 2 * ndim,
            kernel_init=nn.initializers.normal(0.001),
            name="box_deltas",
        )(x)
        return logits, deltas.reshape(batch, count, sets, 2 * ndim)


def detect(
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    rois: jnp.ndarray,
    roi_valid: jnp.ndarray,
    image_shape: tuple[int, ...],
    *,
    max_detections: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    min_size: float = 1.0,
    weights: Sequence[float] = BOX_WEIGHTS,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Final detections of one image (torchvision's
    ``RoIHeads.postprocess_detections``): every proposal refined for every
    foreground class, scored by its softmax probability, clipped, then
    class-aware NMS down to ``max_detections``. vmap over a batch.

    Args:
        logits: ``[R, C + 1]`` class logits, background first.
        deltas: ``[R, C or 1, 2 * ndim]``.
        rois: ``[R, 2 * ndim]`` proposals.
        roi_valid: ``[R]`` bool.
        image_shape: spatial shape (static).
        max_detections: ``K`` (static).
        iou_threshold: of the class-aware NMS.
        score_threshold: detections scoring at or below it are dropped.
        min_size: the smallest box side kept, in voxels.
        weights: the deltas' weights.

    Returns:
        ``(boxes [K, 2 * ndim], scores [K], labels [K] int32 (foreground class
        0..C-1), valid [K] bool)``, by descending score, padding zero.
    """
    num_classes = logits.shape[-1] - 1
    ndim = rois.shape[-1] // 2
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1:]  # [R, C]
    deltas = jnp.broadcast_to(deltas, (rois.shape[0], num_classes, 2 * ndim))
    boxes = detection.decode_boxes(deltas, rois[:, None, :], weights)  # [R, C, 2d]
    boxes = boxes.reshape(-1, 2 * ndim)
    boxes, overlaps = boxes_lib.clip_to_image(boxes, tuple(image_shape))
    big_enough = jnp.all(boxes_lib.box_size(boxes) >= min_size, axis=-1)
    scores = probs.reshape(-1)
    labels = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), rois.shape[0])
    valid = jnp.repeat(roi_valid, num_classes) & overlaps & big_enough
    indices, kept = detection.batched_nms(
        boxes,
        scores,
        labels,
        iou_threshold=iou_threshold,
        max_output=max_detections,
        valid=valid,
        score_threshold=score_threshold,
    )
    return (
        jnp.where(kept[:, None], boxes[indices], 0.0),
        jnp.where(kept, scores[indices], 0.0),
        jnp.where(kept, labels[indices], 0),
        kept,
    )
