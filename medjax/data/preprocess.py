"""Host-side preprocessing of images and volumes: intensity windows, z-scores,
resampling to a voxel size, and centre crops.

numpy and scipy only; these run in data sources and in ``medjax-predict`` before
anything reaches a device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage

if TYPE_CHECKING:  # a Volume is only read and dataclasses.replace-d here
    from medjax.data.io.volume import Volume


def ct_window(hu: np.ndarray, center: float = 40.0, width: float = 400.0) -> np.ndarray:
    """float32 in [-1, 1]: ``hu`` clipped to ``[center - width/2, center + width/2]``
    and rescaled linearly (the same as ``medjax.data.pipeline.CTWindow``)."""
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    low = np.float32(center - width / 2)
    scaled = (np.asarray(hu).astype(np.float32) - low) / np.float32(width)
    return np.clip(scaled, 0.0, 1.0) * np.float32(2.0) - np.float32(1.0)


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(image - mean) / max(std, 1e-8)``, with the mean and standard
    deviation taken over the voxels where ``mask`` is true (all when None)."""
    image = np.asarray(image, np.float32)
    values = image if mask is None else image[np.asarray(mask, bool)]
    if values.size == 0:
        raise ValueError("zscore: the mask selects no voxels")
    mean = values.mean(dtype=np.float64)
    std = max(float(values.std(dtype=np.float64)), 1e-8)
    return ((image - mean) / std).astype(np.float32)


# --------------------------------------------------------------------------- resampling


def resample_to_spacing(
    volume: Volume, spacing: float | Sequence[float], *, order: int | None = None
) -> Volume:
    """Resamples to a new voxel size, keeping the axes' directions.

    Voxel centres are aligned at index 0 (as ``nibabel.processing`` and SimpleITK
    do): new voxel ``n`` sits at old index ``n * new_spacing / old_spacing``, so the
    world coordinate of voxel 0 is unchanged and the new affine is the old one with
    each spatial column scaled by ``new_spacing / old_spacing``. The output shape is
    ``round(old_shape * old_spacing / new_spacing)`` (at least 1); samples past the
    last old voxel repeat the edge.

    Args:
        volume: the Volume; axes after the spatial ones (channels) are kept.
        spacing: the new voxel size in mm, one number or one per spatial axis.
        order: spline order; default 0 (nearest, label values kept) for integer
            and bool arrays, 1 (linear, float32 out) otherwise.

    Returns:
        A Volume of source ``"array"`` (without DICOM datasets, whose geometry no
        longer applies), integer arrays keeping their dtype.
    """
    ndim = volume.spatial_ndim
    new = np.broadcast_to(np.asarray(spacing, np.float64), (ndim,))
    if np.any(new <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(new)}")
    old = np.asarray(volume.spacing)
    array = volume.array
    is_label = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
    if order is None:
        order = 0 if is_label else 1
    shape = tuple(
        max(1, int(round(n * s))) for n, s in zip(volume.spatial_shape, old / new)
    )
    zoom = new / old
    out_dtype = array.dtype if (is_label and order == 0) else np.float32
    work = array.astype(np.float32) if not (is_label and order == 0) else array
    if work.dtype == np.bool_:
        work = work.astype(np.uint8)

    channels = work.reshape(volume.spatial_shape + (-1,))
    resampled = np.stack(
        [
            scipy.ndimage.affine_transform(
                channels[..., c],
                zoom,
                offset=0.0,
                output_shape=shape,
                order=order,
                mode="nearest",
            )
            for c in range(channels.shape[-1])
        ],
        axis=-1,
    ).reshape(shape + array.shape[ndim:])

    affine = np.array(volume.affine, np.float64)
    affine[:3, :ndim] = affine[:3, :ndim] * zoom
    return dataclasses.replace(
        volume,
        array=resampled.astype(out_dtype),
        affine=affine,
        source="array",
        datasets=(),
    )


def center_crop_or_pad(
    array: np.ndarray, shape: Sequence[int], *, pad_value: float = 0
) -> np.ndarray:
    """Crops or pads the leading ``len(shape)`` axes of ``array`` to ``shape``
    around the centre (an odd difference puts the extra voxel at the end); later
    axes are kept."""
    shape = tuple(int(s) for s in shape)
    slices, padding = [], []
    for size, target in zip(array.shape, shape):
        if size >= target:
            start = (size - target) // 2
            slices.append(slice(start, start + target))
            padding.append((0, 0))
        else:
            slices.append(slice(None))
            before = (target - size) // 2
            padding.append((before, target - size - before))
    array = array[tuple(slices)]
    padding += [(0, 0)] * (array.ndim - len(shape))
    return np.pad(array, padding, constant_values=pad_value)
