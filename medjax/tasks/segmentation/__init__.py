"""Semantic segmentation of organs and lesions, 2D and 3D."""

from medjax.tasks.segmentation.task import SegmentationTask

__all__ = ["SegmentationTask"]
