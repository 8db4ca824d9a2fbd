"""Pixel-level evaluation of anomaly maps, host side, as unsupervised anomaly
segmentation is reported (Baur et al. 2021): AUROC and AUPRC of the pixels and
the best achievable Dice, ``⌈Dice⌉``, every voxel of a split pooled, inside a
mask (the body or an organ); and the post-processing of maps (median filter,
small connected components removed)."""

import numpy as np
import scipy.ndimage as ndi

from medjax.metrics.classification import auroc, average_precision


def pooled_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean arrays with every voxel pooled (1 when both empty)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    total = predicted.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (predicted & truth).sum() / total)


def best_dice(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(⌈Dice⌉, threshold)``: the highest pooled Dice of ``scores >= t`` against
    ``truth`` over every threshold ``t`` (each distinct score; tied scores enter
    together), and the ``t`` reaching it (the largest, if several do).

    Args:
        scores: voxel scores ``[N]`` (any shape, flattened).
        truth: boolean ``[N]``.

    Returns:
        ``(dice, threshold)``; ``(nan, nan)`` without positive voxels.
    """
    scores = np.asarray(scores, np.float64).ravel()
    truth = np.asarray(truth, bool).ravel()
    if not truth.any():
        return float("nan"), float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(truth)[last_of_tie]
    dice = 2 * true_positives / (truth.sum() + last_of_tie + 1)
    best = int(np.argmax(dice))  # the first maximum: the highest threshold
    return float(dice[best]), float(scores[last_of_tie[best]])


def median_filter_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Each map of ``maps [N, *S]`` median-filtered over ``size`` voxels per axis
    (``scipy.ndimage.median_filter``, borders reflected); ``size <= 1``: as is."""
    maps = np.asarray(maps, np.float32)
    if size <= 1:
        return maps
    return ndi.median_filter(maps, size=(1,) + (size,) * (maps.ndim - 1), mode="reflect")


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """``mask [N, *S]`` without the connected components (face-connected, within
    each map) of fewer than ``min_size`` voxels."""
    mask = np.asarray(mask, bool)
    if min_size <= 1:
        return mask
    structure = np.zeros((3,) * mask.ndim, bool)
    structure[1] = ndi.generate_binary_structure(mask.ndim - 1, 1)
    labels, count = ndi.label(mask, structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def segment(
    maps: np.ndarray, threshold: float, inside: np.ndarray | None = None,
    min_component: int = 0,
) -> np.ndarray:
    """The anomaly segmentation of ``maps [N, *S]``: ``maps >= threshold``
    inside ``inside`` (all voxels when None), components smaller than
    ``min_component`` voxels removed."""
    predicted = np.asarray(maps) >= threshold
    if inside is not None:
        predicted &= np.asarray(inside, bool)
    return remove_small_components(predicted, min_component)


def best_dice_with_components(
    maps: np.ndarray, truth: np.ndarray, inside: np.ndarray | None,
    min_component: int, num_thresholds: int = 200,
) -> tuple[float, float]:
    """:func:`best_dice` when small components are removed after thresholding
    (Dice is then no longer a function of the sorted scores): the best over
    ``num_thresholds`` thresholds at evenly spaced quantiles of the scores
    inside the mask, from the median up."""
    inside = np.ones(np.shape(maps), bool) if inside is None else np.asarray(inside, bool)
    truth = np.asarray(truth, bool) & inside
    if not truth.any():
        return float("nan"), float("nan")
    candidates = np.unique(
        np.quantile(np.asarray(maps)[inside], np.linspace(0.5, 1.0, num_thresholds))
    )
    dice = [pooled_dice(segment(maps, t, inside, min_component), truth)
            for t in candidates]
    best = int(np.argmax(dice))
    return float(dice[best]), float(candidates[best])


def pixel_metrics(
    maps: np.ndarray,
    truth: np.ndarray,
    inside: np.ndarray | None = None,
    *,
    median_size: int = 0,
    min_component: int = 0,
    threshold: float | None = None,
) -> dict[str, float]:
    """Pixel-level metrics of anomaly ``maps [N, *S]`` against lesion masks
    ``truth [N, *S]``, voxels pooled over the split, counted inside ``inside``
    (boolean ``[N, *S]``; all voxels when None).

    The maps are median-filtered first (``median_size``). ``best_dice`` is
    ⌈Dice⌉, the threshold that reaches it ``best_dice_threshold`` (choose it on
    validation); with ``threshold``, ``dice`` is the Dice at that threshold (on
    test, the validation's). ``min_component`` removes smaller connected
    components from every thresholded segmentation.

    Returns:
        ``pixel_auroc``, ``pixel_auprc``, ``best_dice``, ``best_dice_threshold``
        and, with ``threshold``, ``dice``.
    """
    maps = median_filter_maps(maps, median_size)
    truth = np.asarray(truth, bool)
    mask = np.ones(maps.shape, bool) if inside is None else np.asarray(inside, bool)
    scores, labels = maps[mask], truth[mask]
    result = {
        "pixel_auroc": auroc(scores, labels),
        "pixel_auprc": average_precision(scores, labels),
    }
    if min_component > 1:
        dice, best = best_dice_with_components(maps, truth, mask, min_component)
    else:
        dice, best = best_dice(scores, labels)
    result.update(best_dice=dice, best_dice_threshold=best)
    if threshold is not None:
        result["dice"] = pooled_dice(
            segment(maps, threshold, mask, min_component), truth & mask
        )
    return result
