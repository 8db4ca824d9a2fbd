"""RoIAlign (Mask R-CNN): a fixed-size feature crop of every box by bilinear
sampling, with torchvision's semantics, for channels-last feature maps.

Pure JAX, built on ``medjax.ops.spatial``'s interpolation; jit-able,
differentiable with respect to the features and the boxes, and 2D or 3D. Boxes
follow ``medjax.ops.boxes`` (inclusive voxel indices of the *image*; a box of
voxels ``min..max`` spans ``[min - 0.5, max + 0.5]``).
"""

import functools

import jax
import jax.numpy as jnp

from medjax.ops import spatial


@functools.partial(
    jax.jit, static_argnames=("output_size", "sampling_ratio", "aligned")
)
def roi_align(
    features: jnp.ndarray,
    boxes: jnp.ndarray,
    output_size: tuple[int, ...],
    *,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> jnp.ndarray:
    """Average of bilinear samples in each of ``output_size`` bins of each box.

    Equal to ``torchvision.ops.roi_align(features NCHW, rois, output_size,
    spatial_scale, sampling_ratio, aligned)`` with torchvision's box
    ``(x1, y1, x2, y2) = (min_col, min_row, max_col + 1, max_row + 1)`` (its
    pixel-edge frame; see ``medjax.ops.boxes``). Each box is split into
    ``output_size`` equal bins; each bin averages ``sampling_ratio ** ndim``
    bilinear samples at the centres of a regular sub-grid. ``aligned=True``
    (Detectron2's default) shifts by half a feature cell so that a box maps onto
    the feature cells it covers; ``aligned=False`` is the original Mask R-CNN
    rule (no shift, boxes at least one cell). A sample more than one cell outside
    the map reads 0; one within a cell of the border reads the border value.

    Args:
        features: ``[*F, C]`` one feature map, channels last, 2 or 3 spatial axes
            (vmap over a batch, with boxes ``[B, R, 2 * ndim]``).
        boxes: ``[R, 2 * ndim]`` in image voxels.
        output_size: ``(out_0, .., out_{d-1})`` bins per axis (static).
        spatial_scale: feature cells per image voxel, ``1 / stride``.
        sampling_ratio: samples per bin and axis, > 0 so shapes are static
            (torchvision's adaptive ``0`` is not supported).
        aligned: the half-cell shift, as torchvision.

    Returns:
        ``[R, *output_size, C]``.
    """
    ndim = len(output_size)
    if features.ndim != ndim + 1 or boxes.shape[-1] != 2 * ndim:
        raise ValueError(
            f"roi_align: expected features [*F, C] and boxes [R, {2 * ndim}] for "
            f"{ndim} output axes, got {features.shape} and {boxes.shape}"
        )
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio: expected >= 1, got {sampling_ratio}")
    offset = 0.5 if aligned else 0.0
    # Continuous pixel-edge extent [min, max + 1) in feature cells, shifted.
    start = boxes[:, :ndim] * spatial_scale - offset
    extent = (boxes[:, ndim:] + 1) * spatial_scale - offset - start
    if not aligned:
        extent = jnp.maximum(extent, 1.0)  # torchvision: malformed boxes -> 1 cell
    per_axis = []
    for axis, bins in enumerate(output_size):
        # Sample positions along this axis, [R, bins * sampling_ratio].
        fraction = (jnp.arange(bins * sampling_ratio) + 0.5) / sampling_ratio
        per_axis.append(
            start[:, axis, None] + fraction * (extent[:, axis, None] / bins)
        )
    grid = jnp.stack(
        jnp.broadcast_arrays(
            *[
                p.reshape((-1,) + (1,) * i + (p.shape[1],) + (1,) * (ndim - 1 - i))
                for i, p in enumerate(per_axis)
            ]
        ),
        axis=-1,
    )  # [R, *(output_size * sampling_ratio), ndim]
    # torchvision clamps a sample within one cell of the map onto the border and
    # reads 0 farther out; map_coordinates' 'nearest' mode is the clamping.
    values = spatial.map_channels(features, grid, 1, "nearest")
    upper = jnp.asarray(features.shape[:ndim], grid.dtype)
    inside = jnp.all((grid >= -1) & (grid <= upper), axis=-1)
    values = jnp.where(inside[..., None], values, 0.0)
    # [R, out_0, s, out_1, s, ..., C] -> mean over each bin's samples.
    split = [boxes.shape[0]]
    for bins in output_size:
        split += [bins, sampling_ratio]
    values = values.reshape(*split, features.shape[-1])
    return values.mean(axis=tuple(range(2, 2 * ndim + 1, 2)))
