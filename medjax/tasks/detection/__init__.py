"""Detection and localisation. The classical CAD baseline (``cad``): blob
candidates, hand-crafted features and a scikit-learn classifier, scored by
``medjax.metrics.detection.froc``; ``DetectionTask`` (``task``), the base of the
learned detectors; ``PixelDetectionTask`` (``pixel``, per-voxel lesion
probability) and ``CenterNetTask`` (``centernet``, one-stage)."""

from medjax.tasks.detection.cad import (
    CADDetector,
    Detections,
    Lesions,
    candidate_hits,
    lesions_from_fields,
)
from medjax.tasks.detection.faster_rcnn import FasterRCNNTask
from medjax.tasks.detection.cad_features import (
    FEATURE_NAMES,
    Candidates,
    blob_candidates,
    body_mask,
    candidate_features,
)
from medjax.tasks.detection.centernet import CenterNetTask
from medjax.tasks.detection.pixel import PixelDetectionTask
from medjax.tasks.detection.task import DetectionTask

__all__ = [
    "FEATURE_NAMES",
    "CADDetector",
    "Candidates",
    "CenterNetTask",
    "DetectionTask",
    "FasterRCNNTask",
    "Detections",
    "Lesions",
    "PixelDetectionTask",
    "blob_candidates",
    "body_mask",
    "candidate_features",
    "candidate_hits",
    "lesions_from_fields",
]
