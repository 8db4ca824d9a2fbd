"""Landmark localisation (``task=landmarks``): heatmap regression, direct
coordinate regression and, for volumes, classification of orthogonal planes;
metrics in mm (``medjax.metrics.landmarks``)."""

from medjax.tasks.landmarks.base import LandmarkTask
from medjax.tasks.landmarks.direct import DirectLandmarkTask
from medjax.tasks.landmarks.heatmap import HeatmapLandmarkTask
from medjax.tasks.landmarks.planes import PlaneLandmarkTask

__all__ = [
    "DirectLandmarkTask",
    "HeatmapLandmarkTask",
    "LandmarkTask",
    "PlaneLandmarkTask",
]
