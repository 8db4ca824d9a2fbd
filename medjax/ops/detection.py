"""Detector machinery on boxes: Faster R-CNN box deltas, anchor grids and
non-maximum suppression with a fixed number of outputs.

Pure JAX, no medjax import above ``ops``; every function is jit-able and
vmap-able (callers vmap over the batch). Boxes follow ``medjax.ops.boxes``:
``[N, 2 * ndim]`` as ``(min..., max...)`` voxel indices, inclusive, so a box's
size is ``max - min + 1`` and its centre ``(min + max) / 2``.

Deltas are torchvision's ``BoxCoder`` parametrisation in array-axis order,
``(d_centre_0, .., d_centre_{d-1}, d_logsize_0, .., d_logsize_{d-1})``
(``(dy, dx, dh, dw)`` in 2D, ``(dy, dx, dz, dh, dw, dd)`` in 3D):

    d_centre = w_centre * (centre - anchor_centre) / anchor_size
    d_logsize = w_size * log(size / anchor_size)

with the usual weights ``(1, 1)`` for a region proposal network and
``(10, 5)`` (torchvision's ``(10, 10, 5, 5)``) for a box head.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from medjax.ops import boxes as boxes_lib

# torchvision's bbox_xform_clip: no decoded box grows beyond 1000/16 = 62.5 times
# its anchor, so an untrained head cannot overflow exp().
DEFAULT_SIZE_CLIP = math.log(1000.0 / 16)


def _centre_size(boxes: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    ndim = boxes.shape[-1] // 2
    centre = (boxes[..., :ndim] + boxes[..., ndim:]) / 2
    return centre, boxes_lib.box_size(boxes)


def _weights(weights: Sequence[float], ndim: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(centre [ndim], size [ndim])`` weights from a pair or ``2 * ndim`` values."""
    weights = tuple(float(w) for w in weights)
    if len(weights) == 2:
        weights = (weights[0],) * ndim + (weights[1],) * ndim
    if len(weights) != 2 * ndim:
        raise ValueError(
            f"weights: expected (centre, size) or {2 * ndim} values, got {weights}"
        )
    values = jnp.asarray(weights, jnp.float32)
    return values[:ndim], values[ndim:]


def encode_boxes(
    boxes: jnp.ndarray, anchors: jnp.ndarray, weights: Sequence[float] = (1.0, 1.0)
) -> jnp.ndarray:
    """Regression targets that move each anchor onto its box.

    Args:
        boxes: ``[..., 2 * ndim]`` target boxes (sizes > 0).
        anchors: ``[..., 2 * ndim]`` anchors or proposals, broadcastable.
        weights: ``(centre, size)`` or ``2 * ndim`` values in delta order.

    Returns:
        ``[..., 2 * ndim]`` deltas ``(d_centre..., d_logsize...)``.
    """
    ndim = boxes.shape[-1] // 2
    w_centre, w_size = _weights(weights, ndim)
    centre, size = _centre_size(boxes)
    anchor_centre, anchor_size = _centre_size(anchors)
    d_centre = w_centre * (centre - anchor_centre) / anchor_size
    d_size = w_size * jnp.log(size / anchor_size)
    return jnp.concatenate([d_centre, d_size], axis=-1)


def decode_boxes(
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    weights: Sequence[float] = (1.0, 1.0),
    *,
    size_clip: float = DEFAULT_SIZE_CLIP,
) -> jnp.ndarray:
    """Boxes from deltas against anchors, the inverse of ``encode_boxes``.

    Args:
        deltas: ``[..., 2 * ndim]`` ``(d_centre..., d_logsize...)``.
        anchors: ``[..., 2 * ndim]``, broadcastable.
        weights: as given to ``encode_boxes``.
        size_clip: the largest log-size change applied (after dividing by the
            size weight), torchvision's ``bbox_xform_clip``.

    Returns:
        ``[..., 2 * ndim]`` boxes; a decoded size below one voxel gives
        ``max < min`` (callers drop such boxes, as torchvision's
        ``remove_small_boxes`` does).
    """
    ndim = deltas.shape[-1] // 2
    w_centre, w_size = _weights(weights, ndim)
    anchor_centre, anchor_size = _centre_size(anchors)
    centre = anchor_centre + deltas[..., :ndim] / w_centre * anchor_size
    log_scale = jnp.minimum(deltas[..., ndim:] / w_size, size_clip)
    half = (jnp.exp(log_scale) * anchor_size - 1) / 2
    return jnp.concatenate([centre - half, centre + half], axis=-1)


def anchors_per_location(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> int:
    """Number of anchors ``grid_anchors`` puts at each feature-map location."""
    return len(sizes) * len(aspect_ratios)


def grid_anchors(
    feature_shape: tuple[int, ...],
    stride: int | Sequence[int],
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = (1.0,),
) -> jnp.ndarray:
    """Anchors at every location of one feature map (one FPN level).

    Feature cell ``j`` of a map of stride ``s`` covers image voxels
    ``j * s .. j * s + s - 1``; its anchors are centred on that block, at
    ``(j + 0.5) * s - 0.5``, the point RoIAlign (``aligned=True``) reads for
    that cell. (torchvision centres them at ``j * s`` in its pixel-edge frame,
    half a cell away, and rounds their corners; here nothing is rounded.)

    An anchor of size ``a`` and aspect ratio ``r`` (height / width, torchvision's
    sense) is ``a * sqrt(r)`` voxels high and ``a / sqrt(r)`` wide, so its area
    is ``a ** 2``. In 3D anchors are cubes of side ``a`` and ``aspect_ratios``
    must be ``(1.0,)``.

    Args:
        feature_shape: spatial shape ``F`` of the feature map, 2 or 3 axes
            (static).
        stride: image voxels per feature cell, one value or one per axis.
        sizes: anchor sizes in image voxels.
        aspect_ratios: height / width ratios (2D).

    Returns:
        ``[prod(F) * A, 2 * ndim]`` float32 boxes, ``A = len(sizes) *
        len(aspect_ratios)``, ordered location-major (row-major over ``F``) then
        aspect ratio, then size: the order of a head's ``[*F, A * k]`` output
        reshaped to ``[prod(F) * A, k]``, as in torchvision.
    """
    ndim = len(feature_shape)
    if ndim not in (2, 3):
        raise ValueError(f"feature_shape: expected 2 or 3 axes, got {feature_shape}")
    strides = (stride,) * ndim if isinstance(stride, (int, float)) else tuple(stride)
    if len(strides) != ndim:
        raise ValueError(f"stride: expected 1 or {ndim} values, got {stride}")
    if ndim == 3 and tuple(aspect_ratios) != (1.0,):
        raise ValueError(f"aspect_ratios: 3D anchors are cubes, got {aspect_ratios}")
    # [A, ndim] extents of the anchors at one location, ratio-major.
    extents = []
    for ratio in aspect_ratios:
        scale = (math.sqrt(ratio), 1 / math.sqrt(ratio)) if ndim == 2 else (1.0,) * 3
        extents += [[size * s for s in scale] for size in sizes]
    # Everything here is static: numpy builds the constant, no trace is needed.
    half = (np.asarray(extents, np.float64) - 1) / 2
    axes = [(np.arange(n) + 0.5) * s - 0.5 for n, s in zip(feature_shape, strides)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 1, ndim)
    anchors = np.concatenate([centres - half, centres + half], axis=-1)
    return jnp.asarray(anchors.reshape(-1, 2 * ndim), jnp.float32)


@functools.partial(jax.jit, static_argnames=("max_output",))
def nms(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    *,
    iou_threshold: float,
    max_output: int,
    valid: jnp.ndarray | None = None,
    score_threshold: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Greedy non-maximum suppression with a fixed number of outputs.

    The same boxes as torchvision's ``nms`` (highest score first; a box is
    dropped when its IoU with a kept box is above ``iou_threshold``; ties go to
    the lower index), cut to the first ``max_output``. Each of ``max_output``
    steps takes the best box left and suppresses its overlaps, so the cost is
    ``max_output * N`` and no ``[N, N]`` matrix is formed; the steps run one
    after another, so cut ``N`` first with ``jax.lax.top_k`` (torchvision's
    ``pre_nms_top_n``). Batch with ``jax.vmap``.

    Args:
        boxes: ``[N, 2 * ndim]``.
        scores: ``[N]``.
        iou_threshold: overlaps above it are suppressed.
        max_output: ``K``, the number of output slots (static).
        valid: ``[N]`` bool, padding rows False (never kept).
        score_threshold: if given, boxes scoring at or below it are never kept.

    Returns:
        ``(indices [K] int32, kept [K] bool)``: indices into ``boxes`` by
        descending score, padded with -1 where ``kept`` is False. Gather with
        ``jnp.where(kept[:, None], boxes[indices], 0)``.
    """
    count = boxes.shape[0]
    alive = jnp.ones(count, bool) if valid is None else valid.astype(bool)
    if score_threshold is not None:
        alive = alive & (scores > score_threshold)
    positions = jnp.arange(count)

    def step(i, state):
        alive, indices, kept = state
        best = jnp.argmax(jnp.where(alive, scores, -jnp.inf))
        # argmax of an all -inf row is 0: check the box is still alive.
        take = alive[best]
        overlap = boxes_lib.iou(boxes[best][None], boxes)[0]
        suppressed = (overlap > iou_threshold) | (positions == best)
        alive = alive & ~(take & suppressed)
        indices = indices.at[i].set(jnp.where(take, best, -1))
        return alive, indices, kept.at[i].set(take)

    state = (alive, jnp.full(max_output, -1, jnp.int32), jnp.zeros(max_output, bool))
    _, indices, kept = jax.lax.fori_loop(0, max_output, step, state)
    return indices, kept


@functools.partial(jax.jit, static_argnames=("max_output",))
def batched_nms(
    boxes: jnp.ndarray,
    scores: jnp.ndarray,
    classes: jnp.ndarray,
    *,
    iou_threshold: float,
    max_output: int,
    valid: jnp.ndarray | None = None,
    score_threshold: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Class-aware NMS: boxes of different classes never suppress each other.

    torchvision's coordinate trick: every class's boxes are shifted by
    ``class * (span + 2)``, ``span`` the range of all coordinates, so boxes of
    two classes are at least one voxel apart and their IoU is 0; then one
    ``nms``. Batch with ``jax.vmap``.

    Args:
        boxes: ``[N, 2 * ndim]``.
        scores: ``[N]``.
        classes: ``[N]`` integer class of each box (>= 0).
        iou_threshold, max_output, valid, score_threshold: as ``nms``.

    Returns:
        ``(indices [K] int32, kept [K] bool)`` as ``nms``, all classes ranked
        together by score.
    """
    mask = jnp.ones(boxes.shape[0], bool) if valid is None else valid.astype(bool)
    coordinates = jnp.where(mask[:, None], boxes, jnp.nan)
    span = jnp.nan_to_num(jnp.nanmax(coordinates) - jnp.nanmin(coordinates))
    offsets = classes.astype(boxes.dtype) * (span + 2)
    return nms(
        boxes + offsets[:, None],
        scores,
        iou_threshold=iou_threshold,
        max_output=max_output,
        valid=mask,
        score_threshold=score_threshold,
    )
