"""Slice-to-slice consistency of a segmentation of a volume, host side.

A model that segments each slice of a volume on its own (a 2D U-Net slice by
slice) can flicker along the slice axis: a boundary that jumps back and forth,
an organ that vanishes from one slice and returns in the next. Voxel Dice barely
notices this (each slice may be nearly right), but a volume rendered from it is
ragged. The measure chosen here compares how much the prediction changes from
one slice to the next with how much the truth does:

* :func:`interslice_dice` of a binary volume: the mean Dice between each slice
  and the next along ``axis``, over the adjacent pairs where either slice holds
  foreground (a structure that starts or ends between two slices counts as a pair
  with Dice 0, in the truth as in the prediction).
* :func:`slice_consistency`: the prediction's inter-slice Dice minus the
  truth's. 0 when the prediction changes between slices as much as the anatomy
  does; negative when it flickers more (the usual failure); positive when it is
  smoother than the anatomy (e.g. a structure smeared along the slice axis).

Why this and not a count of 3D connected components: a jittering boundary keeps
one component, and a component count says nothing about how ragged the surface
is, while one spurious speck in one slice changes the count as much as a lost
organ. Adjacent-slice Dice sees both, in the units of Dice, and subtracting the
truth's value removes what the anatomy itself contributes (a tapering organ has
an inter-slice Dice below 1 in the truth too).
"""

import numpy as np


def interslice_dice(mask: np.ndarray, axis: int = -1) -> float:
    """Mean Dice between adjacent slices of one binary volume.

    Args:
        mask: ``[*spatial]`` binary mask of one case (nonzero is foreground).
        axis: the slice axis (the last, axial, one of the torso phantoms).

    Returns:
        The mean over adjacent pairs ``(z, z + 1)`` with foreground in either
        slice of ``2 |S_z & S_{z+1}| / (|S_z| + |S_{z+1}|)``; NaN when no pair
        holds foreground (an empty mask).
    """
    mask = np.moveaxis(np.asarray(mask) != 0, axis, 0)
    flat = mask.reshape(mask.shape[0], -1)
    below, above = flat[:-1], flat[1:]
    both = np.sum(below & above, axis=1)
    sizes = np.sum(below, axis=1) + np.sum(above, axis=1)
    pairs = sizes > 0
    if not pairs.any():
        return float("nan")
    return float(np.mean(2.0 * both[pairs] / sizes[pairs]))


def slice_consistency(
    predicted: np.ndarray, truth: np.ndarray, axis: int = -1
) -> float:
    """The prediction's :func:`interslice_dice` minus the truth's, for one case.

    Args:
        predicted: ``[*spatial]`` binary mask.
        truth: ``[*spatial]`` binary mask of the same shape.
        axis: the slice axis.

    Returns:
        The difference (0: as consistent as the truth; negative: flickers more).
        NaN when either mask is empty: a missed structure is counted by Dice
        and the segmentation task's ``missed_<class>``, not here.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"predicted and truth must have the same shape; got {predicted.shape} and "
            f"{truth.shape}"
        )
    return interslice_dice(predicted, axis) - interslice_dice(truth, axis)
