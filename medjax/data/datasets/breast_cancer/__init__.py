"""Tabular data as medjax datasets: scikit-learn's Wisconsin diagnostic breast
cancer data (569 fine-needle aspirates x 30 features of their cell nuclei; 212
malignant, 357 benign). It ships inside scikit-learn, so nothing is downloaded.

Records are ``{"features": float32 [D], "label": int32}``; train with the
classification task's ``image_key: features`` (``conf/experiment/
breast_cancer_mlp.yaml``).
"""

from collections.abc import Mapping, Sequence

import numpy as np

from medjax.data import schema
from medjax.data.dataset import Dataset

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}


class ArraySource:
    """A random-access source over in-memory arrays: record ``i`` is
    ``{name: array[i] for name, array in arrays.items()}``.

    Args:
        **arrays: arrays with the same leading length ``N``.
    """

    def __init__(self, **arrays: np.ndarray):
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"ArraySource: arrays of different lengths {lengths}")
        self.arrays = {name: np.asarray(array) for name, array in arrays.items()}
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} records")
        return {name: array[index] for name, array in self.arrays.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self[int(i)] for i in indices]

    def __repr__(self) -> str:
        shapes = {name: array.shape[1:] for name, array in self.arrays.items()}
        return f"ArraySource({self._length} records, {shapes})"


def stratified_split(
    labels: np.ndarray, fractions: Mapping[str, float], seed: int = 0
) -> dict[str, np.ndarray]:
    """Indices of a deterministic stratified split.

    Each class's indices are shuffled (``numpy.random.default_rng(seed)``) and cut
    into consecutive runs of ``round(fraction * class count)``, the first split
    named in ``fractions`` taking the remainder of every class; each split's
    indices are then shuffled, so a prefix of a split is a random sample of it.

    Args:
        labels: class labels ``[N]``.
        fractions: ``{split: fraction}``, summing to 1.
        seed: the shuffle's seed.

    Returns:
        ``{split: indices [N_split]}`` (disjoint, covering ``range(N)``).
    """
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split_fractions: expected fractions >= 0, got {dict(fractions)}")
    if not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(
            f"split_fractions: expected fractions summing to 1, got {dict(fractions)}"
        )
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts = {name: [] for name in names}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name in names[1:]:
            count = int(round(fractions[name] * len(members)))
            parts[name].append(members[start : start + count])
            start += count
        parts[names[0]].append(members[start:])
    return {name: rng.permutation(np.concatenate(parts[name])) for name in names}


def breast_cancer_arrays(
    split_fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    standardize: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The Wisconsin diagnostic breast-cancer data, split and standardised.

    Labels: **1 = malignant** (the positive class of AUROC and sensitivity),
    0 = benign. This flips scikit-learn's ``target``, where 0 is malignant.

    Args:
        split_fractions: ``{split: fraction}``; default 60/20/20 train /
            validation / test, stratified by label.
        seed: seed of the split.
        standardize: map each feature to zero mean and unit standard deviation
            with the statistics of the ``train`` split only (no leakage).

    Returns:
        ``{split: (features float32 [N_split, 30], labels int32 [N_split])}``.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = np.asarray(data.data, np.float64)
    labels = (np.asarray(data.target) == 0).astype(np.int32)  # sklearn: 0 = malignant
    fractions = dict(DEFAULT_SPLIT_FRACTIONS if split_fractions is None else split_fractions)
    if "train" not in fractions:
        raise ValueError(f"split_fractions: expected a 'train' split, got {sorted(fractions)}")
    fractions = {"train": fractions.pop("train"), **fractions}  # train takes remainders
    indices = stratified_split(labels, fractions, seed)
    if standardize:
        train = features[indices["train"]]
        features = (features - train.mean(axis=0)) / train.std(axis=0)
    return {
        name: (features[index].astype(np.float32), labels[index])
        for name, index in indices.items()
    }


def _tabular_example(record: dict) -> dict[str, np.ndarray]:
    return {
        key: np.asarray(value, np.int32 if key == "label" else np.float32)
        for key, value in record.items()
    }


def breast_cancer(
    batch_size: int = 32,
    eval_batch_size: int = 64,
    split_fractions: Mapping[str, float] | None = None,
    split_sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    standardize: bool = True,
    num_threads: int = 1,
    data_dir: str | None = None,
) -> Dataset:
    """scikit-learn's Wisconsin diagnostic breast-cancer data (569 x 30) as a
    :class:`~medjax.data.dataset.Dataset` of ``{"features": float32 [30],
    "label": int32}`` records, label 1 = malignant, 0 = benign (see
    :func:`breast_cancer_arrays`).

    The default split is 60/20/20, stratified: 343 train (128 malignant), 113
    validation (42), 113 test (42).

    Args:
        batch_size: global training batch.
        eval_batch_size: global evaluation batch.
        split_fractions: ``{split: fraction}``; default train 0.6, validation
            0.2, test 0.2.
        split_sizes: ``{split: count}`` (for tests and smoke runs): keep only the
            first ``count`` records of those splits. Standardisation still uses
            the whole train split.
        seed: seed of the split.
        standardize: z-score features with the train split's mean and std.
        num_threads: grain reader threads (the data is in memory: 1 is plenty).
        data_dir: ignored (the data ships with scikit-learn); accepted so that
            ``data.data_dir=...`` works as for every other data option.
    """
    del data_dir
    arrays = breast_cancer_arrays(split_fractions, seed, standardize)
    sources = {}
    for name, (features, labels) in arrays.items():
        count = len(labels)
        if split_sizes and name in split_sizes:
            count = int(split_sizes[name])
            if not 0 < count <= len(labels):
                raise ValueError(
                    f"data.split_sizes.{name}={count}: expected 1..{len(labels)}"
                )
        sources[name] = ArraySource(features=features[:count], label=labels[:count])
    if split_sizes:
        unknown = sorted(set(split_sizes) - set(sources))
        if unknown:
            raise ValueError(
                f"data.split_sizes: unknown splits {unknown}; expected {sorted(sources)}"
            )
    return Dataset(
        sources=sources,
        convert=_tabular_example,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_threads=num_threads,
        schema={"features": schema.TABULAR, "label": schema.CLASS},
        name="breast_cancer (Wisconsin diagnostic)",
    )
