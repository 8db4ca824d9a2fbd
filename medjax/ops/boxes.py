"""Axis-aligned boxes: corners, moving them with a transform, clipping, sizes,
IoU, and the boxes of the instances of an instance map.

Pure JAX, no other medjax import. A box is ``[2 * ndim]`` voxel coordinates
``(min_0, .., min_{d-1}, max_0, .., max_{d-1})`` in the same voxel-centre frame
as points (``medjax.ops.spatial``): a box covering voxels 2..5 of an axis has
``min = 2, max = 5``. A set of boxes is ``[N, 2 * ndim]``.

Sizes count voxels, ``size = max - min + 1`` on every axis (the box above is 4
voxels long): a box spans ``[min - 0.5, max + 0.5]`` continuously, so a box with
``min == max`` holds one voxel, and IoU, the detection deltas
(``medjax.ops.detection``) and RoIAlign (``medjax.ops.roi_align``) all read
sizes this way. In torchvision's continuous ``(x1, y1, x2, y2)`` frame (pixel
``i`` spans ``[i, i + 1)``) the same box is ``x1 = min, x2 = max + 1``, with
the axes in the other order (``x`` is the column).

A transform that is not a pure scaling or translation (a rotation, a shear, an
elastic warp) turns a box into a shape that is no longer a box; the moved box is
the smallest axis-aligned box holding the box's ``2 ** ndim`` moved corners.
"""

import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _ndim(boxes: jnp.ndarray) -> int:
    if boxes.shape[-1] % 2 or boxes.shape[-1] // 2 not in (1, 2, 3):
        raise ValueError(
            f"boxes: expected [..., 2 * ndim] with ndim 1..3, got {boxes.shape}"
        )
    return boxes.shape[-1] // 2


def corners(boxes: jnp.ndarray) -> jnp.ndarray:
    """The ``2 ** ndim`` corners of every box.

    Args:
        boxes: ``[..., 2 * ndim]`` as ``(min..., max...)``.

    Returns:
        ``[..., 2 ** ndim, ndim]``; corner ``k`` takes, on axis ``a``, the max when
        bit ``a`` of ``k`` (most significant first) is set, else the min.
    """
    ndim = _ndim(boxes)
    low, high = boxes[..., :ndim], boxes[..., ndim:]
    # [2 ** ndim, ndim] of 0/1: which end of each axis each corner takes.
    choice = jnp.asarray(list(itertools.product((0, 1), repeat=ndim)), bool)
    return jnp.where(choice, high[..., None, :], low[..., None, :])


def from_corners(points: jnp.ndarray) -> jnp.ndarray:
    """The smallest box holding each set of points.

    Args:
        points: ``[..., K, ndim]``.

    Returns:
        ``[..., 2 * ndim]`` as ``(min..., max...)``.
    """
    return jnp.concatenate([points.min(axis=-2), points.max(axis=-2)], axis=-1)


def move(
    boxes: jnp.ndarray, move_points: Callable[[jnp.ndarray], jnp.ndarray]
) -> jnp.ndarray:
    """Boxes moved through their corners by any map of points.

    Args:
        boxes: ``[N, 2 * ndim]``.
        move_points: maps ``[K, ndim]`` points to where they land, ``[K, ndim]``
            (e.g. ``partial(spatial.transform_points, matrix)``).

    Returns:
        ``[N, 2 * ndim]``: the box of each box's moved corners.
    """
    ndim = _ndim(boxes)
    count = 2**ndim
    points = corners(boxes).reshape(-1, ndim)
    moved = move_points(points).reshape(*boxes.shape[:-1], count, ndim)
    return from_corners(moved)


def clip_to_image(
    boxes: jnp.ndarray, shape: tuple[int, ...]
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Boxes clipped to the image ``[0, size - 1]`` on every axis.

    Args:
        boxes: ``[N, 2 * ndim]``.
        shape: spatial shape ``S`` (static), ``ndim`` axes.

    Returns:
        ``(clipped [N, 2 * ndim], overlaps [N] bool)``; ``overlaps`` is False for
        a box wholly outside the image (clipping would squash it onto an edge).
    """
    ndim = _ndim(boxes)
    if len(shape) != ndim:
        raise ValueError(f"shape: expected {ndim} axes like the boxes, got {shape}")
    upper = jnp.asarray(shape, boxes.dtype) - 1
    low, high = boxes[..., :ndim], boxes[..., ndim:]
    overlaps = jnp.all((high >= 0) & (low <= upper), axis=-1)
    clipped = jnp.concatenate(
        [jnp.clip(low, 0, upper), jnp.clip(high, 0, upper)], axis=-1
    )
    return clipped, overlaps


def box_size(boxes: jnp.ndarray) -> jnp.ndarray:
    """Extent of every box in voxels on every axis, ``max - min + 1``.

    Args:
        boxes: ``[..., 2 * ndim]``.

    Returns:
        ``[..., ndim]``; negative when ``max < min - 1`` (an empty box).
    """
    ndim = _ndim(boxes)
    return boxes[..., ndim:] - boxes[..., :ndim] + 1


def box_volume(boxes: jnp.ndarray) -> jnp.ndarray:
    """Area (2D) or volume (3D) of every box in voxels, empty boxes 0.

    Args:
        boxes: ``[..., 2 * ndim]``.

    Returns:
        ``[...]``, the product of ``box_size`` clipped at 0.
    """
    return jnp.prod(jnp.maximum(box_size(boxes), 0), axis=-1)


@jax.jit
def iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Intersection over union of every pair of boxes, 2D or 3D.

    Sizes are inclusive voxel counts (``max - min + 1``): two boxes sharing one
    row of voxels intersect by that row.

    Args:
        a: ``[N, 2 * ndim]``.
        b: ``[M, 2 * ndim]``, the same ``ndim``.

    Returns:
        ``[N, M]``; 0 where the union is empty (two empty boxes).
    """
    ndim = _ndim(a)
    if _ndim(b) != ndim:
        raise ValueError(f"iou: boxes of {ndim} and {_ndim(b)} axes")
    a, b = a[:, None, :], b[None, :, :]
    low = jnp.maximum(a[..., :ndim], b[..., :ndim])
    high = jnp.minimum(a[..., ndim:], b[..., ndim:])
    intersection = jnp.prod(jnp.maximum(high - low + 1, 0), axis=-1)
    union = box_volume(a) + box_volume(b) - intersection
    return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1), 0.0)


@functools.partial(jax.jit, static_argnames=("max_instances",))
def boxes_from_instances(
    instance_map: jnp.ndarray, max_instances: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The voxel extent of every instance of an instance map (jit-able).

    Instance id ``k`` (1..``max_instances``) gives row ``k - 1``, so the rows
    line up with per-lesion arrays padded the same way (the phantoms' lesion
    centres and radii); id 0 is background and ids above ``max_instances`` are
    left out. The extent is taken over every voxel of the id, connected or not.

    Args:
        instance_map: ``[*S]`` integer ids, ``ndim`` = 1..3 axes.
        max_instances: ``K``, the number of rows (static).

    Returns:
        ``(boxes [K, 2 * ndim] float32, valid [K] bool)``: ``(min..., max...)``
        voxel indices of each id present; rows of absent ids are 0 and invalid.
    """
    shape = instance_map.shape
    ids = instance_map.reshape(-1).astype(jnp.int32)
    # Segment K + 1 collects background and out-of-range ids, then is dropped.
    ids = jnp.where((ids >= 1) & (ids <= max_instances), ids - 1, max_instances)
    coords = jnp.stack(jnp.unravel_index(jnp.arange(ids.size), shape), axis=-1).astype(
        jnp.float32
    )
    segments = max_instances + 1
    low = jax.ops.segment_min(coords, ids, num_segments=segments)[:-1]
    high = jax.ops.segment_max(coords, ids, num_segments=segments)[:-1]
    count = jax.ops.segment_sum(jnp.ones_like(ids), ids, num_segments=segments)
    valid = count[:-1] > 0
    boxes = jnp.concatenate([low, high], axis=-1)
    return jnp.where(valid[:, None], boxes, 0.0), valid
