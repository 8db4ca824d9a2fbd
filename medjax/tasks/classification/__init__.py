"""Classification tasks: images (exams) and lesions seen through views around a
point, single- or multi-label."""

from medjax.tasks.classification.lesion import LesionClassificationTask
from medjax.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask", "LesionClassificationTask"]
