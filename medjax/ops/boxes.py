"""Axis-aligned boxes: their corners, moving them with a transform, clipping.

Pure JAX, no other medjax import. A box is ``[2 * ndim]`` voxel coordinates
``(min_0, .., min_{d-1}, max_0, .., max_{d-1})`` in the same voxel-centre frame
as points (``medjax.ops.spatial``): a box covering voxels 2..5 of an axis has
``min = 2, max = 5``. A set of boxes is ``[N, 2 * ndim]``.

A transform that is not a pure scaling or translation (a rotation, a shear, an
elastic warp) turns a box into a shape that is no longer a box; the moved box is
the smallest axis-aligned box holding the box's ``2 ** ndim`` moved corners.
"""

import itertools
from collections.abc import Callable

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
