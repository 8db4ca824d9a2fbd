"""Sources restricted to the records of chosen labels, and phantoms whose training
split holds healthy cases only (for anomaly detection: learn what normal looks
like, then flag what does not fit)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from medjax.data.dataset import Dataset
from medjax.data.datasets.phantoms import builder as builders
from medjax.data.datasets.phantoms import phantoms


class LabelFilteredSource:
    """The records of ``source`` whose ``label_key`` is in ``keep``, in their
    original order, optionally only the first ``limit`` of them.

    A random-access source like the one it wraps (``len``, ``[i]``,
    ``__getitems__``). The labels are read once, at construction.

    Raises:
        ValueError: fewer than ``limit`` records match.
    """

    def __init__(
        self,
        source,
        keep: Sequence[int] = (0,),
        *,
        label_key: str = "label",
        limit: int | None = None,
        chunk: int = 256,
    ):
        self.source = source
        labels = (
            np.concatenate(
                [
                    [
                        int(r[label_key])
                        for r in source.__getitems__(
                            list(range(i, min(i + chunk, len(source))))
                        )
                    ]
                    for i in range(0, len(source), chunk)
                ]
            )
            if len(source)
            else np.zeros(0, int)
        )
        indices = np.flatnonzero(np.isin(labels, list(keep)))
        if limit is not None:
            if len(indices) < limit:
                raise ValueError(
                    f"LabelFilteredSource: {len(indices)} records with {label_key} in "
                    f"{tuple(keep)}, fewer than the {limit} asked for"
                )
            indices = indices[:limit]
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.source[int(self.indices[index])]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return self.source.__getitems__([int(self.indices[i]) for i in indices])


def _oversized(count: int) -> int:
    # About half the phantoms are healthy: twice the count plus six standard
    # deviations of the binomial, so one build almost always suffices.
    return 2 * count + int(6 * np.sqrt(2 * count)) + 16


def healthy_phantoms(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    train_split: str = "train",
    **options: Any,
) -> Dataset:
    """Built-in phantoms (:func:`medjax.data.datasets.phantoms.phantoms`, same
    options) whose ``train_split`` holds only healthy cases (``label == 0``),
    while the other splits keep healthy and lesion-bearing cases alike.

    ``split_sizes[train_split]`` is the number of healthy training cases: the
    underlying phantom split is built larger (about twice, since half the cases
    are healthy; larger again in the rare case that is not enough) and the first
    healthy cases are kept. Cases are pure functions of ``(seed, split, index)``,
    so a larger build holds the same first cases.
    """
    sizes = dict(
        split_sizes or builders.phantom_config(kind, image_size, None, seed).split_sizes
    )
    if train_split not in sizes:
        raise ValueError(
            f"data.train_split={train_split!r}: expected one of {sorted(sizes)}"
        )
    wanted = int(sizes[train_split])
    if wanted < 1:
        raise ValueError(f"data.split_sizes.{train_split}: expected >= 1, got {wanted}")
    built = _oversized(wanted)
    while True:
        data = phantoms(
            kind, image_size, {**sizes, train_split: built}, seed, data_dir, **options
        )
        source = data.sources[train_split]
        try:
            healthy = LabelFilteredSource(source, (0,), limit=wanted)
            break
        except ValueError:
            built *= 2
    data.sources = {**data.sources, train_split: healthy}
    data.train_split = train_split
    return data
