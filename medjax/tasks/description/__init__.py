"""Automatic description: a short structured finding of a phantom slice,
generated token by token (``task=description``)."""

from medjax.tasks.description.findings import FindingCoder
from medjax.tasks.description.task import DescriptionTask

__all__ = ["DescriptionTask", "FindingCoder"]
