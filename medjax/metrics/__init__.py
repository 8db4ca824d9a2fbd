"""Metrics, one module per task family. Per-example ones run on device inside the
step and take a validity ``mask``; split-level ones (AUROC, average precision,
surface distances, lesion detection) run on the host over a whole split.

- ``classification``: accuracy, AUROC (binary, one-vs-rest, multi-label), average
  precision, sensitivity/specificity, balanced accuracy;
- ``segmentation``: Dice and IoU per class, ``masked_nanmean``, surface distances
  (HD95, ASSD), lesion detection counts (conventions of MONAI, see that module);
- ``reconstruction``: PSNR, anomaly maps and scores;
- ``regression``: mean squared error, R^2;
- ``detection``: FROC curve and CPM as LUNA16 counts them (``match_candidates``
  per scan, then ``froc``), sensitivity by lesion size, COCO average precision
  of boxes (``box_average_precision``);
- ``landmarks``: radial errors, MRE per landmark and overall, success detection
  rates, presence false positives and misses (``landmark_metrics``).

The public names are re-exported here: ``metrics.auroc(...)``. Imports no medjax
code above ``ops``.
"""

from medjax.metrics.classification import (
    accuracy,
    auroc,
    auroc_one_vs_rest,
    average_precision,
    balanced_accuracy,
    count_nonfinite,
    multilabel_auroc,
    sensitivity_specificity,
)
from medjax.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    LUNA16_FP_RATES,
    ScanMatch,
    box_average_precision,
    froc,
    froc_curve,
    froc_sensitivities,
    match_candidates,
    score_threshold_at_fp_rate,
    sensitivity_by_size,
)
from medjax.metrics.landmarks import (
    SDR_RADII_MM,
    landmark_metrics,
    radial_errors,
)
from medjax.metrics.reconstruction import anomaly_maps, anomaly_scores, psnr
from medjax.metrics.regression import mean_squared_error, r2_score
from medjax.metrics.segmentation import (
    average_surface_distance,
    average_surface_distance_of_distances,
    dice_per_class,
    hausdorff_95_of_distances,
    hausdorff_distance_95,
    iou_per_class,
    lesion_detection,
    lesion_detection_counts,
    masked_nanmean,
    surface_distances,
)

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "LUNA16_FP_RATES",
    "SDR_RADII_MM",
    "ScanMatch",
    "accuracy",
    "anomaly_maps",
    "anomaly_scores",
    "auroc",
    "auroc_one_vs_rest",
    "average_precision",
    "average_surface_distance",
    "average_surface_distance_of_distances",
    "balanced_accuracy",
    "box_average_precision",
    "count_nonfinite",
    "dice_per_class",
    "froc",
    "froc_curve",
    "froc_sensitivities",
    "hausdorff_95_of_distances",
    "hausdorff_distance_95",
    "iou_per_class",
    "landmark_metrics",
    "lesion_detection",
    "lesion_detection_counts",
    "masked_nanmean",
    "match_candidates",
    "mean_squared_error",
    "multilabel_auroc",
    "psnr",
    "r2_score",
    "radial_errors",
    "score_threshold_at_fp_rate",
    "sensitivity_by_size",
    "sensitivity_specificity",
    "surface_distances",
]
