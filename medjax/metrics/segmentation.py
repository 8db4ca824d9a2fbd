"""Segmentation metrics: per-example overlap on device, surface distances and
lesion detection on the host, one case at a time.

Conventions (those of MONAI's metrics):

* Overlap (device side, :func:`dice_per_class`, :func:`iou_per_class`): a class whose
  ground truth is empty in an example gets NaN there, whatever was predicted
  (MONAI ``DiceMetric(ignore_empty=True)``), so that it is left out of the class
  mean; reduce with :func:`masked_nanmean`. Padded examples (``mask`` false) are 0.
* Surface distances (host side, one case at a time): the surface of a binary mask is
  the mask minus its binary erosion (face connectivity, outside the array counting as
  background: MONAI ``get_mask_edges``); each surface voxel of one mask is measured
  to the nearest surface voxel of the other mask (the Euclidean distance transform of
  the other mask's surface, MONAI ``get_surface_distance``), in the units of
  ``spacing`` (voxels when it is None).
* Empty masks, for :func:`hausdorff_distance_95` and :func:`average_surface_distance`:
  both empty -> NaN (undefined, left out of means); exactly one of prediction and
  truth empty -> ``inf`` (MONAI returns inf then: the missing structure is infinitely
  far). Callers averaging over cases should count or report the inf cases rather than
  average them.
"""

import jax.numpy as jnp
import numpy as np
import scipy.ndimage


# --------------------------------------------------------------------------------------
# Segmentation overlap, device side.
# --------------------------------------------------------------------------------------


def _overlap_counts(
    predicted: jnp.ndarray, labels: jnp.ndarray, num_classes: int
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per example and class: ``|P & G|``, ``|P|``, ``|G|``, each ``[B, C]`` int32."""
    if predicted.shape != labels.shape:
        raise ValueError(
            f"predicted and labels must both be [B, *spatial]; got "
            f"{tuple(predicted.shape)} and {tuple(labels.shape)}"
        )
    classes = jnp.arange(num_classes)
    # [B, N, C] booleans; integer counts stay exact beyond float32's 2**24.
    p = predicted.reshape(predicted.shape[0], -1, 1) == classes
    g = labels.reshape(labels.shape[0], -1, 1) == classes
    count = lambda x: jnp.sum(x, axis=1, dtype=jnp.int32)  # noqa: E731
    return count(p & g), count(p), count(g)


def dice_per_class(
    predicted: jnp.ndarray,
    labels: jnp.ndarray,
    num_classes: int,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Dice coefficient ``2 |P & G| / (|P| + |G|)`` per example and class.

    NaN where the ground truth of a class is empty in an example, whatever the
    prediction (MONAI ``DiceMetric(ignore_empty=True)``): that case is left out of
    the class mean (see :func:`masked_nanmean`). Class 0 (background) is included;
    slice ``[:, 1:]`` to drop it.

    Args:
        predicted: ``[B, *spatial]`` integer class map (e.g. ``argmax`` of logits).
        labels: ``[B, *spatial]`` integer ground truth.
        num_classes: ``C``, a static Python int.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B, C]`` float32 Dice; NaN where the truth of the class is empty, exactly 0
        for rows where ``mask`` is false.
    """
    both, p, g = _overlap_counts(predicted, labels, num_classes)
    dice = jnp.where(g > 0, 2.0 * both / jnp.maximum(p + g, 1), jnp.nan)
    return dice if mask is None else jnp.where(mask[:, None], dice, 0.0)


def iou_per_class(
    predicted: jnp.ndarray,
    labels: jnp.ndarray,
    num_classes: int,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Intersection over union ``|P & G| / |P | G|`` per example and class.

    Same conventions as :func:`dice_per_class` (NaN where the truth of a class is
    empty, MONAI ``MeanIoU(ignore_empty=True)``).

    Args:
        predicted: ``[B, *spatial]`` integer class map.
        labels: ``[B, *spatial]`` integer ground truth.
        num_classes: ``C``, a static Python int.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B, C]`` float32 IoU; NaN where the truth of the class is empty, exactly 0
        for rows where ``mask`` is false.
    """
    both, p, g = _overlap_counts(predicted, labels, num_classes)
    iou = jnp.where(g > 0, both / jnp.maximum(p + g - both, 1), jnp.nan)
    return iou if mask is None else jnp.where(mask[:, None], iou, 0.0)


def masked_nanmean(
    values: jnp.ndarray, mask: jnp.ndarray | None = None, *, axis: int = 0
) -> jnp.ndarray:
    """Mean over ``axis`` of the entries that are valid and not NaN.

    The reduction that matches :func:`dice_per_class`: for ``values [B, C]`` and
    ``mask [B]`` it gives the ``[C]`` class means over the real examples whose truth
    holds the class; NaN for a class with no such example.

    Args:
        values: ``[B, ...]`` values, NaN for left-out entries.
        mask: optional ``[B]`` bool validity of the examples (along ``axis`` 0).
        axis: the axis to reduce.

    Returns:
        ``values`` reduced over ``axis``.
    """
    keep = ~jnp.isnan(values)
    if mask is not None:
        keep &= mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim))
    count = jnp.sum(keep, axis=axis)
    total = jnp.sum(jnp.where(keep, values, 0.0), axis=axis)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


# --------------------------------------------------------------------------------------
# Surface distances and lesion detection, host side (numpy / scipy, one case).
# --------------------------------------------------------------------------------------


def _spacing_tuple(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.ndim(spacing) == 0:
        return (float(spacing),) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(
            f"spacing must be a number or {ndim} numbers (one per axis); got {spacing}"
        )
    return spacing


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array
    counts as background): ``mask`` minus its binary erosion."""
    return mask & ~scipy.ndimage.binary_erosion(mask)


def surface_distances(
    predicted: np.ndarray, truth: np.ndarray, spacing=None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the surfaces of two binary masks of one case.

    Surfaces and distances follow MONAI (``get_mask_edges``, ``get_surface_distance``):
    each surface voxel of one mask is measured to the nearest surface voxel of the
    other mask, with ``scipy.ndimage.distance_transform_edt(sampling=spacing)``.

    Args:
        predicted: ``[*spatial]`` binary mask (any ndim; nonzero is foreground).
        truth: ``[*spatial]`` binary mask of the same shape.
        spacing: voxel size, a number or one number per axis; None for voxel units.

    Returns:
        ``(d_pred_to_truth [Np], d_truth_to_pred [Nt])``, float64, over the ``Np``
        surface voxels of ``predicted`` and the ``Nt`` of ``truth``. When the other
        mask is empty the distances are ``inf`` (MONAI); an empty mask gives an
        empty array.
    """
    predicted = np.asarray(predicted).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"predicted and truth must have the same shape; got {predicted.shape} and "
            f"{truth.shape}"
        )
    spacing = _spacing_tuple(spacing, predicted.ndim)
    union = predicted | truth
    if not union.any():
        return np.zeros(0), np.zeros(0)
    # Cropping to the bounding box of the union (padded by one voxel so the array
    # border does not make surface) changes no distance and saves work.
    box = tuple(
        slice(int(np.min(i)), int(np.max(i)) + 1) for i in np.nonzero(union)
    )
    predicted = np.pad(predicted[box], 1)
    truth = np.pad(truth[box], 1)
    # ... but voxels on the original array border are surface (outside is background),
    # which the one-voxel zero padding preserves.
    surface_pred, surface_truth = _surface(predicted), _surface(truth)

    def to_nearest(from_surface, to_surface):
        if not to_surface.any():
            return np.full(int(from_surface.sum()), np.inf)
        distance = scipy.ndimage.distance_transform_edt(~to_surface, sampling=spacing)
        return distance[from_surface]

    return (
        to_nearest(surface_pred, surface_truth),
        to_nearest(surface_truth, surface_pred),
    )


def hausdorff_distance_95(
    predicted: np.ndarray, truth: np.ndarray, spacing=None
) -> float:
    """95th-percentile symmetric Hausdorff distance of two binary masks of one case.

    MONAI ``compute_hausdorff_distance(percentile=95, directed=False)``: the larger of
    the two directed 95th percentiles (linear interpolation, ``np.percentile``) of
    :func:`surface_distances`.

    Args:
        predicted: ``[*spatial]`` binary mask.
        truth: ``[*spatial]`` binary mask of the same shape.
        spacing: voxel size, a number or one number per axis; None for voxel units.

    Returns:
        The distance in ``spacing`` units; NaN when both masks are empty, ``inf`` when
        exactly one is.
    """
    return hausdorff_95_of_distances(*surface_distances(predicted, truth, spacing))


def _empty_surface(to_truth: np.ndarray, to_pred: np.ndarray) -> float | None:
    """NaN when both surfaces are empty, ``inf`` when exactly one is, else None."""
    if to_truth.size == 0 and to_pred.size == 0:
        return float("nan")
    if to_truth.size == 0 or to_pred.size == 0:
        return float("inf")
    return None


def hausdorff_95_of_distances(to_truth: np.ndarray, to_pred: np.ndarray) -> float:
    """:func:`hausdorff_distance_95` of the two directed distance sets of
    :func:`surface_distances` (so that one computation serves several metrics)."""
    empty = _empty_surface(to_truth, to_pred)
    if empty is not None:
        return empty
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def average_surface_distance(
    predicted: np.ndarray, truth: np.ndarray, spacing=None, symmetric: bool = True
) -> float:
    """Average surface distance of two binary masks of one case.

    MONAI ``compute_average_surface_distance``: with ``symmetric`` the mean of the
    concatenated distances in both directions (each surface voxel of either mask
    counts once, so the larger surface weighs more; not the mean of the two
    directed means); otherwise the mean distance from the predicted surface to the
    truth surface.

    Args:
        predicted: ``[*spatial]`` binary mask.
        truth: ``[*spatial]`` binary mask of the same shape.
        spacing: voxel size, a number or one number per axis; None for voxel units.
        symmetric: average both directions (ASSD) rather than prediction to truth.

    Returns:
        The distance in ``spacing`` units; NaN when both masks are empty, ``inf`` when
        exactly one is.
    """
    return average_surface_distance_of_distances(
        *surface_distances(predicted, truth, spacing), symmetric=symmetric
    )


def average_surface_distance_of_distances(
    to_truth: np.ndarray, to_pred: np.ndarray, symmetric: bool = True
) -> float:
    """:func:`average_surface_distance` of the two directed distance sets of
    :func:`surface_distances`."""
    empty = _empty_surface(to_truth, to_pred)
    if empty is not None:
        return empty
    distances = np.concatenate([to_truth, to_pred]) if symmetric else to_truth
    return float(np.mean(distances))


def lesion_detection_counts(
    predicted: np.ndarray, truth: np.ndarray, *, truth_instances: bool | None = None
) -> dict[str, int]:
    """Lesion-level detection counts of one case.

    Lesions are the connected components (full connectivity,
    ``generate_binary_structure(ndim, ndim)``) of the binary masks. A truth lesion is
    detected when any predicted component overlaps it by at least one voxel; a
    predicted component is a true positive when it overlaps any truth lesion.

    Args:
        predicted: ``[*spatial]`` binary mask (nonzero is foreground).
        truth: ``[*spatial]`` binary mask, or an instance-id map (integers,
            0 background, each positive id one lesion, connected or not).
        truth_instances: True reads ``truth`` as instance ids, False takes the
            connected components of ``truth != 0``. None (default) decides from
            ``truth``: ids when it is an integer array holding more than one distinct
            positive value, components otherwise (bool masks, 0/1 or 0/255 masks).
            Pass False for a multi-class label map, or binarise it first.

    Returns:
        ``true_positives`` (predicted components touching a truth lesion),
        ``false_positives`` (the other predicted components), ``false_negatives``
        (truth lesions touched by no predicted component), ``num_truth`` and
        ``num_predicted`` (lesion counts), as ints.
    """
    predicted = np.asarray(predicted) != 0
    truth = np.asarray(truth)
    if predicted.shape != truth.shape:
        raise ValueError(
            f"predicted and truth must have the same shape; got {predicted.shape} and "
            f"{truth.shape}"
        )
    structure = scipy.ndimage.generate_binary_structure(predicted.ndim, predicted.ndim)
    predicted_ids, num_predicted = scipy.ndimage.label(predicted, structure)
    if truth_instances is None:
        truth_instances = np.issubdtype(truth.dtype, np.integer) and (
            np.unique(truth[truth > 0]).size > 1
        )
    if truth_instances:
        if not np.issubdtype(truth.dtype, np.integer) or (truth < 0).any():
            raise ValueError("truth_instances needs non-negative integer instance ids")
        truth_ids = np.unique(truth[truth > 0])
    else:
        labelled, count = scipy.ndimage.label(truth != 0, structure)
        truth, truth_ids = labelled, np.arange(1, count + 1)
    overlap = (truth > 0) & predicted
    detected_truth = np.unique(truth[overlap])
    hit_predicted = np.unique(predicted_ids[overlap])
    true_positives = int(hit_predicted.size)
    return {
        "true_positives": true_positives,
        "false_positives": int(num_predicted) - true_positives,
        "false_negatives": int(truth_ids.size - detected_truth.size),
        "num_truth": int(truth_ids.size),
        "num_predicted": int(num_predicted),
    }


def lesion_detection(counts_list) -> dict[str, float]:
    """Lesion sensitivity and precision pooled over cases.

    Args:
        counts_list: iterable of :func:`lesion_detection_counts` dicts, one a case.

    Returns:
        ``lesion_sensitivity`` = detected truth lesions / truth lesions, and
        ``lesion_precision`` = true-positive predicted components / predicted
        components, each summed over all cases; NaN when the denominator is 0.
    """
    counts_list = list(counts_list)
    num_truth = sum(c["num_truth"] for c in counts_list)
    detected = num_truth - sum(c["false_negatives"] for c in counts_list)
    num_predicted = sum(c["num_predicted"] for c in counts_list)
    true_positives = sum(c["true_positives"] for c in counts_list)
    return {
        "lesion_sensitivity": detected / num_truth if num_truth else float("nan"),
        "lesion_precision": (
            true_positives / num_predicted if num_predicted else float("nan")
        ),
    }
