"""A dataset as the training loop sees it: random-access sources per split, the
record-to-example conversion, and batch sizes."""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from medjax.data import pipeline
from medjax.data import schema as schema_lib
from medjax.errors import ConfigError

SAMPLINGS = ("uniform", "class_balanced")


@dataclasses.dataclass
class Dataset:
    """Splits and how to batch them.

    Attributes:
        sources: ``{split: random-access source}`` (``len`` and ``__getitems__``).
        convert: maps one record to one example in the batch convention.
        batch_size: global training batch (over all devices and processes).
        eval_batch_size: global evaluation batch.
        train_split / eval_split: the splits trained on and validated on.
        num_threads: grain reader threads per process.
        spacing: voxel size in mm of the examples (None: unknown), for surface
            distances.
        normalize: maps raw intensities (HU for CT) to model inputs; used by
            ``medjax-predict`` on new images (None: identity).
        sampling: ``uniform`` (each epoch a permutation) or ``class_balanced``
            (each epoch draws examples with replacement, every class equally
            likely; the class is the task's label field).
        schema: ``{key: Role}`` of the examples' fields (``medjax.data.schema``):
            what each field is, for augmentation, figures and task checks.
        name: what the data is, in messages (``medjax_phantoms/torso2d_64``).
    """

    sources: dict[str, Any]
    convert: Callable[[pipeline.Example], pipeline.Example]
    batch_size: int
    eval_batch_size: int
    train_split: str = "train"
    eval_split: str = "validation"
    num_threads: int = 2
    spacing: tuple[float, ...] | None = None
    normalize: Callable[[Any], Any] | None = None
    sampling: str = "uniform"
    schema: dict[str, schema_lib.Role] = dataclasses.field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        schema_lib.as_schema(self.schema)  # checks validity keys
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"data.sampling: expected one of {SAMPLINGS}, got {self.sampling!r}"
            )
        for option in ("train_split", "eval_split"):
            split = getattr(self, option)
            if split not in self.sources:
                raise ValueError(
                    f"data.{option}={split!r}: expected one of {sorted(self.sources)}"
                )

    def source(self, split: str):
        if split not in self.sources:
            raise ConfigError(
                f"split={split!r}: expected one of {sorted(self.sources)}"
            )
        return self.sources[split]

    def labels(self, split: str, key: str) -> np.ndarray:
        """The integer ``key`` field of every example of ``split`` ``[N]`` (a
        source with a ``labels()`` method answers without reading images)."""
        source = self.source(split)
        if hasattr(source, "labels"):
            return np.asarray(source.labels())
        return np.asarray([np.asarray(source[i][key]) for i in range(len(source))])

    def class_counts(self, split: str, key: str, num_classes: int) -> np.ndarray:
        """Examples of each class ``[num_classes]`` in ``split``."""
        labels = self.labels(split, key)
        if labels.ndim > 1:  # multi-label 0/1 targets: positives of each label
            return (labels > 0).sum(0)
        return np.bincount(labels, minlength=num_classes)

    def sample_weights(self, key: str) -> np.ndarray | None:
        """Per-example sampling weights of the training split ``[N]``: None for
        uniform sampling; ``1 / n_class`` for class-balanced sampling."""
        if self.sampling == "uniform":
            return None
        labels = self.labels(self.train_split, key)
        if labels.ndim > 1:
            raise ConfigError(
                "data.sampling=class_balanced: needs one integer class per example, "
                f"got labels of shape {labels.shape[1:]} per example (multi-label)"
            )
        counts = np.bincount(labels)
        return 1.0 / counts[labels]
