"""Detection metrics over a whole split, on the host (numpy): the FROC curve and
CPM as LUNA16 counts them, sensitivity by lesion size, and COCO average
precision of boxes.

**FROC (LUNA16).** Each scan gives candidates (points with scores) and lesions
(centre and radius, optionally an instance map). A candidate hits a lesion when
it lies strictly within the lesion's radius of its centre, or, with an instance
map, on a voxel of the lesion. A lesion is detected with the highest score of
the candidates that hit it; the other candidates on it are ignored (neither true
nor false positives); a candidate that hits two lesions detects both (LUNA16
counts it for each). Candidates hitting no lesion are false positives; those on
an *excluded* lesion (LUNA16's ``annotations_excluded``) are ignored. Lowering
the threshold through every score traces sensitivity (detected / lesions)
against false positives per scan; this is LUNA16's ``computeFROC`` (its
``roc_curve`` of the lesion and false-positive scores, rescaled) point for
point. The sensitivity at a rate is read by linear interpolation between the
curve's points, as LUNA16's ``np.interp`` (LUNA16 reads its interpolated curve
at the nearest of 10001 grid points from 1/8 to 8; here the rates are
interpolated exactly, a difference below the grid step of 0.0008 FP/scan times
the curve's slope), and held at its last value beyond the last point. CPM is
the mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 FP/scan.

**Average precision (COCO).** Per class and IoU threshold: detections of all
images by descending score, each matched greedily, per image, to the unmatched
truth box of highest IoU at or above the threshold (a tie in score keeps the
input order); precision made monotone and read at 101 recall points
``0, 0.01, .., 1`` (0 past the last recall reached). IoU counts voxels
inclusively (``medjax.ops.boxes``). A class without truth boxes has AP NaN and
is left out of the means.

Imports no medjax code above ``ops``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LUNA16_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COCO_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2).tolist())


@dataclass(frozen=True)
class ScanMatch:
    """Candidates of one scan matched against its lesions (``match_candidates``).

    Attributes:
        lesion_scores: ``[L]`` highest score of the candidates hitting each
            lesion, ``-inf`` for a missed lesion.
        lesion_radii: ``[L]`` radii, as given (for ``sensitivity_by_size``).
        counted: ``[L]`` bool, False for excluded lesions.
        false_positive_scores: ``[F]`` scores of candidates hitting no lesion.
    """

    lesion_scores: np.ndarray
    lesion_radii: np.ndarray
    counted: np.ndarray
    false_positive_scores: np.ndarray


def match_candidates(
    points: np.ndarray,
    scores: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    *,
    instance_map: np.ndarray | None = None,
    lesion_ids: np.ndarray | None = None,
    excluded: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> ScanMatch:
    """Which lesions one scan's candidates hit, LUNA16's rule (module docstring).

    Drop padding rows first (``points[valid]``).

    Args:
        points: ``[K, ndim]`` candidate positions, voxel coordinates.
        scores: ``[K]`` candidate scores.
        centres: ``[L, ndim]`` lesion centres, voxel coordinates.
        radii: ``[L]`` lesion radii, in voxels, or in mm with ``spacing``.
        instance_map: ``[*S]`` lesion ids; a candidate on a voxel of lesion
            ``l`` (its position rounded) hits it too.
        lesion_ids: ``[L]`` the id of each lesion in ``instance_map``, default
            ``1..L`` (row ``l`` is id ``l + 1``, as the phantoms store them).
        excluded: ``[L]`` bool, lesions whose candidates are ignored and which
            do not count.
        spacing: ``[ndim]`` voxel size; distances are then in its units (mm).

    Returns:
        A ``ScanMatch``.
    """
    scores = np.asarray(scores, np.float64)
    radii = np.asarray(radii, np.float64)
    points, centres = np.asarray(points, np.float64), np.asarray(centres, np.float64)
    # Empty lists come without their last axis: take it from the other array.
    ndim = next((a.shape[-1] for a in (points, centres) if a.ndim == 2), 1)
    points = points.reshape(len(scores), ndim)
    centres = centres.reshape(len(radii), ndim)
    scale = np.ones(1) if spacing is None else np.asarray(spacing, np.float64)
    offsets = (points[:, None, :] - centres[None, :, :]) * scale
    hits = (offsets**2).sum(-1) < radii[None, :] ** 2  # [K, L], LUNA16's strict <
    if instance_map is not None and len(points):
        instance_map = np.asarray(instance_map)
        ids = np.arange(1, len(radii) + 1) if lesion_ids is None else lesion_ids
        voxel = np.rint(points).astype(int)
        inside = np.all((voxel >= 0) & (voxel < instance_map.shape), axis=1)
        under = np.zeros(len(points), instance_map.dtype)
        under[inside] = instance_map[tuple(voxel[inside].T)]
        hits |= (under[:, None] == np.asarray(ids)[None, :]) & (under[:, None] > 0)
    excluded = np.zeros(len(radii), bool) if excluded is None else np.asarray(excluded)
    counted = ~excluded
    lesion_scores = np.where(hits, scores[:, None], -np.inf).max(0, initial=-np.inf)
    return ScanMatch(
        lesion_scores=np.where(counted, lesion_scores, -np.inf),
        lesion_radii=radii,
        counted=counted,
        false_positive_scores=scores[~hits.any(1)],
    )


def froc_curve(
    matches: Sequence[ScanMatch], *, num_scans: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The FROC curve of a split, one point per distinct score.

    Args:
        matches: one ``ScanMatch`` per scan (scans without candidates included).
        num_scans: divisor of the false-positive count, default ``len(matches)``.

    Returns:
        ``(fps [T + 1], sensitivity [T + 1], thresholds [T + 1])`` from the
        point ``(0, 0)`` at threshold ``+inf`` through every distinct score in
        descending order: false positives per scan and the fraction of counted
        lesions detected at ``score >= threshold``. Sensitivity is NaN without
        lesions.
    """
    num_scans = len(matches) if num_scans is None else num_scans
    lesion = np.concatenate([m.lesion_scores[m.counted] for m in matches] + [[]])
    false = np.concatenate([m.false_positive_scores for m in matches] + [[]])
    detected = lesion[np.isfinite(lesion)]
    thresholds = np.unique(np.concatenate([detected, false]))[::-1]
    # Counts at score >= t, by searching each sorted score list.
    tp = len(detected) - np.searchsorted(np.sort(detected), thresholds, "left")
    fp = len(false) - np.searchsorted(np.sort(false), thresholds, "left")
    fps = np.concatenate([[0.0], fp / max(num_scans, 1)])
    total = len(lesion)
    sensitivity = np.concatenate([[0.0], tp / total]) if total else fps * np.nan
    return fps, sensitivity, np.concatenate([[np.inf], thresholds])


def froc_sensitivities(
    fps: np.ndarray,
    sensitivity: np.ndarray,
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
) -> np.ndarray:
    """Sensitivity at given false-positive rates, by linear interpolation.

    At a rate where the curve rises (several points at the same ``fps``) the
    highest of them is read; between two rates the curve runs from the highest
    point of the lower to the lowest point of the higher, as ``np.interp`` over
    LUNA16's curve does. Past the last point the last sensitivity holds.

    Args:
        fps: ``[T]`` non-decreasing, from ``froc_curve`` (starting at 0).
        sensitivity: ``[T]``, non-decreasing.
        fp_rates: rates to read (>= 0), false positives per scan.

    Returns:
        ``[len(fp_rates)]``.
    """
    rates = np.asarray(fp_rates, np.float64)
    at, first = np.unique(fps, return_index=True)
    entry = np.minimum.reduceat(sensitivity, first)
    exit_ = np.maximum.reduceat(sensitivity, first)
    left = np.clip(np.searchsorted(at, rates, side="right") - 1, 0, len(at) - 1)
    right = np.minimum(left + 1, len(at) - 1)
    span = at[right] - at[left]
    fraction = np.where(span > 0, (rates - at[left]) / np.where(span > 0, span, 1), 0)
    fraction = np.clip(fraction, 0, 1)
    inside = (rates > at[left]) & (right > left)
    rising = exit_[left] + fraction * (entry[right] - exit_[left])
    return np.where(inside, rising, exit_[left])


def froc(
    matches: Sequence[ScanMatch],
    *,
    num_scans: int | None = None,
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
    bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """FROC curve, sensitivities at ``fp_rates`` and CPM, optionally with
    bootstrap confidence intervals (scans resampled with replacement, as
    LUNA16; percentile intervals by ``np.quantile``).

    Args:
        matches: one ``ScanMatch`` per scan.
        num_scans: as ``froc_curve``.
        fp_rates: the rates CPM averages (LUNA16's seven by default).
        bootstrap: number of resamples, 0 for none.
        confidence: width of the intervals.
        seed: of the resampling.

    Returns:
        ``fps``, ``sensitivity``, ``thresholds`` (the curve), ``fp_rates``,
        ``sensitivities`` (at ``fp_rates``) and ``cpm`` (their mean); with
        ``bootstrap``, ``cpm_interval`` ``(low, high)`` and
        ``sensitivities_interval [len(fp_rates), 2]``.
    """
    fps, sensitivity, thresholds = froc_curve(matches, num_scans=num_scans)
    at_rates = froc_sensitivities(fps, sensitivity, fp_rates)
    result = {
        "fps": fps,
        "sensitivity": sensitivity,
        "thresholds": thresholds,
        "fp_rates": np.asarray(fp_rates, np.float64),
        "sensitivities": at_rates,
        "cpm": float(at_rates.mean()),
    }
    if bootstrap:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(bootstrap):
            drawn = [matches[i] for i in rng.integers(len(matches), size=len(matches))]
            curve = froc_curve(drawn, num_scans=num_scans)
            samples.append(froc_sensitivities(curve[0], curve[1], fp_rates))
        samples = np.asarray(samples)
        tails = [(1 - confidence) / 2, (1 + confidence) / 2]
        result["sensitivities_interval"] = np.nanquantile(samples, tails, axis=0).T
        result["cpm_interval"] = tuple(np.nanquantile(samples.mean(1), tails))
    return result


def score_threshold_at_fp_rate(
    matches: Sequence[ScanMatch], fp_rate: float, *, num_scans: int | None = None
) -> float:
    """The lowest score threshold whose false positives per scan stay at or
    below ``fp_rate`` (``+inf`` when the best candidate is already too many)."""
    fps, _, thresholds = froc_curve(matches, num_scans=num_scans)
    return float(thresholds[np.flatnonzero(fps <= fp_rate)[-1]])


def sensitivity_by_size(
    matches: Sequence[ScanMatch],
    bin_edges: Sequence[float],
    *,
    threshold: float = -np.inf,
) -> dict:
    """Sensitivity per lesion-radius bin ``[edge_i, edge_{i+1})``.

    Args:
        matches: one ``ScanMatch`` per scan.
        bin_edges: ``[B + 1]`` increasing radii (``np.inf`` closes the last).
        threshold: a lesion is detected when its score is ``>= threshold`` (and
            some candidate hit it); the default counts any hit, and
            ``score_threshold_at_fp_rate`` gives an operating point.

    Returns:
        ``bin_edges [B + 1]``, ``num_lesions [B]`` and ``sensitivity [B]`` (NaN
        for an empty bin); lesions outside the edges are left out.
    """
    edges = np.asarray(bin_edges, np.float64)
    radii = np.concatenate([m.lesion_radii[m.counted] for m in matches] + [[]])
    scores = np.concatenate([m.lesion_scores[m.counted] for m in matches] + [[]])
    detected = np.isfinite(scores) & (scores >= threshold)
    which = np.digitize(radii, edges) - 1
    counts = np.bincount(
        which[(which >= 0) & (which < len(edges) - 1)], minlength=len(edges) - 1
    )
    hits = np.bincount(
        which[detected & (which >= 0) & (which < len(edges) - 1)],
        minlength=len(edges) - 1,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return {"bin_edges": edges, "num_lesions": counts, "sensitivity": sensitivity}


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[N, M]`` IoU, inclusive voxel sizes (numpy twin of ``ops.boxes.iou``)."""
    ndim = a.shape[1] // 2
    low = np.maximum(a[:, None, :ndim], b[None, :, :ndim])
    high = np.minimum(a[:, None, ndim:], b[None, :, ndim:])
    intersection = np.prod(np.clip(high - low + 1, 0, None), axis=-1)
    volume_a = np.prod(np.clip(a[:, ndim:] - a[:, :ndim] + 1, 0, None), axis=-1)
    volume_b = np.prod(np.clip(b[:, ndim:] - b[:, :ndim] + 1, 0, None), axis=-1)
    union = volume_a[:, None] + volume_b[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def _greedy_matches(overlap: np.ndarray, threshold: float) -> np.ndarray:
    """COCO's matching in one image: each detection (rows of ``overlap [P, G]``,
    by descending score) takes the unmatched truth box of highest IoU at or
    above the threshold (COCO's ``min(t, 1 - 1e-10)``); equal IoUs go to the
    later truth box, as COCO's loop. Returns ``[P]`` bool, matched or not."""
    taken = np.zeros(overlap.shape[1], bool)
    matched = np.zeros(overlap.shape[0], bool)
    floor = min(threshold, 1 - 1e-10)
    for d, row in enumerate(overlap):
        free = np.where(taken, -1.0, row)
        if free.size == 0:
            break
        best = free.size - 1 - int(np.argmax(free[::-1]))
        if free[best] >= floor:
            taken[best] = matched[d] = True
    return matched


def _average_precision(scores, matched, num_truth) -> float:
    """COCO's 101-point interpolated AP of detections pooled over images."""
    if num_truth == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    matched = np.asarray(matched, bool)[order]
    tp, fp = np.cumsum(matched), np.cumsum(~matched)
    recall = tp / num_truth
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    where = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    reached = where < len(precision)
    sampled = np.zeros(len(where))
    sampled[reached] = precision[where[reached]]
    return float(sampled.mean())


def box_average_precision(
    predicted_boxes: Sequence[np.ndarray],
    predicted_scores: Sequence[np.ndarray],
    truth_boxes: Sequence[np.ndarray],
    *,
    predicted_labels: Sequence[np.ndarray] | None = None,
    truth_labels: Sequence[np.ndarray] | None = None,
    num_classes: int = 1,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict:
    """COCO average precision of boxes (module docstring), per class and IoU.

    Args:
        predicted_boxes: per image ``[P, 2 * ndim]`` (padding dropped).
        predicted_scores: per image ``[P]``.
        truth_boxes: per image ``[G, 2 * ndim]``.
        predicted_labels: per image ``[P]`` classes ``0..num_classes - 1``;
            None for one class.
        truth_labels: per image ``[G]``, likewise.
        num_classes: number of classes.
        iou_thresholds: matching thresholds, COCO's 0.5:0.05:0.95 by default.
        max_detections: the highest-scoring detections kept per image and class.

    Returns:
        ``ap [num_classes, T]`` (NaN for a class without truth),
        ``iou_thresholds [T]``, ``ap50`` (mean over classes at IoU 0.5, NaN when
        0.5 is not a threshold) and ``map`` (mean over classes and thresholds).
    """
    thresholds = np.asarray(iou_thresholds, np.float64)
    ap = np.full((num_classes, len(thresholds)), np.nan)
    for label in range(num_classes):
        scores, matched, num_truth = [], [[] for _ in thresholds], 0
        for i, (boxes, score, truth) in enumerate(
            zip(predicted_boxes, predicted_scores, truth_boxes, strict=True)
        ):
            boxes, truth = np.asarray(boxes, np.float64), np.asarray(truth, float)
            # Empty lists come without their last axis: take it from the other.
            width = next((x.shape[-1] for x in (boxes, truth) if x.ndim == 2), 4)
            boxes, truth = boxes.reshape(-1, width), truth.reshape(-1, width)
            score = np.asarray(score, np.float64)
            if predicted_labels is not None:
                keep = np.asarray(predicted_labels[i]) == label
                boxes, score = boxes[keep], score[keep]
            if truth_labels is not None:
                truth = truth[np.asarray(truth_labels[i]) == label]
            order = np.argsort(-score, kind="mergesort")[:max_detections]
            overlap = _box_iou(boxes[order], truth)
            num_truth += len(truth)
            scores.append(score[order])
            for t, threshold in enumerate(thresholds):
                matched[t].append(_greedy_matches(overlap, threshold))
        pooled = np.concatenate(scores + [[]])
        for t in range(len(thresholds)):
            hits = np.concatenate(matched[t] + [np.zeros(0, bool)])
            ap[label, t] = _average_precision(pooled, hits, num_truth)
    at_half = np.flatnonzero(np.isclose(thresholds, 0.5))
    return {
        "ap": ap,
        "iou_thresholds": thresholds,
        "ap50": _nanmean(ap[:, at_half[0]]) if len(at_half) else float("nan"),
        "map": _nanmean(ap),
    }


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite values, NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
