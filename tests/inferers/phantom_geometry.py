"""A phantom whose true mask is known in world coordinates, and a stand-in
segmentation "model" that is exact on it, to test that ``medjax-predict``'s
reorientation and writing put every label on the world position of the
structure it segments.

The stand-in labels bright voxels by which half of its *display-oriented* input
they lie in (rows toward posterior, columns toward the patient's left, slices
toward superior: ``segmentation.DISPLAY_AXES``), so it is right only if the
volume reaches it in display orientation, and the written mask is right only if
the labels are turned back to the input's index order. The truth is the same
rule read off world RAS+ coordinates: left = smaller x, posterior = smaller y,
superior = larger z than the volume's centre.
"""

import functools

import numpy as np

from medjax.inferers.segmentation import Segmenter

INSIDE, OUTSIDE = 100.0, -1000.0  # HU of the structures and of the background


def display_quadrant_labels(inputs, threshold=(INSIDE + OUTSIDE) / 2) -> np.ndarray:
    """``[B, H, W, 1]`` (2D) or ``[B, X, Y, Z, 1]`` (3D) display-oriented
    inputs -> ``[B, *S]`` labels: 0 for voxels not above ``threshold`` (default: halfway
    between OUTSIDE and INSIDE), else ``1 + left + 2 *
    posterior (+ 4 * superior in 3D)``, each half taken past the middle index."""
    x = np.asarray(inputs)[..., 0]
    spatial = x.shape[1:]
    labels = np.ones(x.shape, np.int64)
    for axis, weight in zip(range(len(spatial)), (2, 1, 4)):  # P, L, S
        shape = [1] * x.ndim
        shape[axis + 1] = spatial[axis]
        index = np.arange(spatial[axis]).reshape(shape)
        labels = labels + weight * (index > (spatial[axis] - 1) / 2)
    return np.where(x > threshold, labels, 0)


def stand_in_segmenter(spatial_dims: int, spacing=None, **threshold) -> Segmenter:
    """A ``Segmenter`` around ``display_quadrant_labels`` (intensities passed
    through unchanged; PNGs come in as -1..1, so they need ``threshold=0``)."""
    return Segmenter(
        segment_batch=functools.partial(display_quadrant_labels, **threshold),
        spatial_dims=spatial_dims,
        normalize=lambda array: np.asarray(array, np.float32),
        spacing=spacing,
        step=0,
    )


def world_points(affine: np.ndarray, shape) -> np.ndarray:
    """``[*shape, 3]`` world RAS+ mm of every voxel centre."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    index = index.reshape(*shape, len(shape))
    homogeneous = np.concatenate(
        [index, np.zeros((*shape, 3 - len(shape))), np.ones((*shape, 1))], -1
    )
    return (homogeneous @ np.asarray(affine).T)[..., :3]


def centre(affine: np.ndarray, shape) -> np.ndarray:
    """World RAS+ of the middle of the grid ``shape`` (the same point in any
    reorientation of it)."""
    return (np.asarray(affine) @ np.r_[(np.asarray(shape) - 1) / 2, [0] * (3 - len(shape)), 1])[:3]


def true_labels(points: np.ndarray, middle: np.ndarray, *, offset: float,
                radius: float, spatial_dims: int) -> np.ndarray:
    """Labels at world ``points [..., 3]``: rods along z (2D models, which see
    axial slices) or balls (3D) centred ``offset`` mm from ``middle`` along x
    and y (and z), labelled ``1 + left + 2 * posterior (+ 4 * superior)``."""
    relative = points - middle
    left = relative[..., 0] < 0
    posterior = relative[..., 1] < 0
    superior = relative[..., 2] > 0
    nearest = np.sign(relative) * offset  # the structure of the voxel's octant
    distance = relative - nearest
    if spatial_dims == 2:
        inside = np.linalg.norm(distance[..., :2], axis=-1) <= radius
        labels = 1 + left + 2 * posterior
    else:
        inside = np.linalg.norm(distance, axis=-1) <= radius
        labels = 1 + left + 2 * posterior + 4 * superior
    return np.where(inside, labels, 0)


def phantom(affine, shape, *, offset, radius, spatial_dims):
    """The image ``[*shape]`` (INSIDE/OUTSIDE HU) and its true labels on the
    grid ``affine``, ``shape``."""
    points = world_points(affine, shape)
    labels = true_labels(points, centre(affine, shape), offset=offset,
                         radius=radius, spatial_dims=spatial_dims)
    return np.where(labels > 0, INSIDE, OUTSIDE).astype(np.float32), labels


def labels_in_world(mask_volume, middle, *, offset, radius, spatial_dims):
    """The truth at the world position of every voxel of a written mask (read
    through the mask's own affine)."""
    points = world_points(mask_volume.affine, mask_volume.spatial_shape)
    return true_labels(points, middle, offset=offset, radius=radius,
                       spatial_dims=spatial_dims)
