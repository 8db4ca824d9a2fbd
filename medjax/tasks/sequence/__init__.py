"""Tasks over sequences (the ``time`` role): cine ejection-fraction regression,
cine motion classification, and slice-stack classification of 3D volumes whose
slices are moved to the time axis (``slice_axis``)."""

from medjax.tasks.sequence.classification import SequenceClassificationTask
from medjax.tasks.sequence.regression import SequenceRegressionTask

__all__ = ["SequenceClassificationTask", "SequenceRegressionTask"]
