"""Lesion-level examples: one example per lesion of the torso phantoms.

Exam-level records hold up to K lesions (centres, radii and types padded with a
validity mask). :class:`LesionSource` turns a split of them into a random-access
source with one record per lesion: the exam's fields plus

- ``lesion_center [1, ndim]`` float32 voxel coordinates and
  ``lesion_center_valid [1]`` (True): the candidate point, in the points
  convention so that augmentation moves it with the image;
- ``lesion_label``: the lesion's class, ``LESION_CLASSES.index(type)``
  (liver hypodense, liver hyperdense, lung nodule);
- ``lesion_radius``: equivalent radius in voxels.

The lesion index is read once per split (every exam record is decoded once).
"""

import numpy as np
from tqdm.auto import tqdm

from medjax.data.datasets.phantoms import torso

LESION_CLASSES = torso.LESION_TYPES[1:]  # "none" is not a lesion class


class LesionSource:
    """Random access to the lesions of an exam-level phantom source.

    Args:
        source: a ``medjax_phantoms`` torso split (``len``, ``__getitems__``).
        description: progress-bar label while the lesions are indexed.
    """

    def __init__(self, source, description: str = "lesions"):
        self._source = source
        cases, rows, labels = [], [], []
        for index in tqdm(range(len(source)), desc=f"indexing {description}",
                          unit="case", leave=False, mininterval=2):
            record = source[index]
            for row in np.flatnonzero(record["lesion_valid"]):
                cases.append(index)
                rows.append(row)
                labels.append(int(record["lesion_types"][row]) - 1)
        self.cases = np.asarray(cases, np.int64)
        self.rows = np.asarray(rows, np.int64)
        self._labels = np.asarray(labels, np.int64)

    def __len__(self) -> int:
        return len(self.cases)

    def labels(self) -> np.ndarray:
        """``lesion_label`` of every record, without reading images ``[N]``."""
        return self._labels

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict]:
        indices = np.asarray(indices, np.int64)
        records = self._source.__getitems__([int(i) for i in self.cases[indices]])
        out = []
        for record, index in zip(records, indices):
            row = self.rows[index]
            record = dict(record)
            record["lesion_center"] = np.asarray(record["lesion_centers"][row:row + 1],
                                                 np.float32)
            record["lesion_center_valid"] = np.ones(1, bool)
            record["lesion_label"] = np.int64(self._labels[index])
            record["lesion_radius"] = np.float32(record["lesion_radii"][row])
            out.append(record)
        return out
