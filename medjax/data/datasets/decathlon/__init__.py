"""Medical Segmentation Decathlon-style folders (``dataset.json``, ``imagesTr/``,
``labelsTr/``) as a medjax dataset; ``source.py`` reads the cases."""

import numpy as np

from medjax.data import pipeline
from medjax.data import schema as schema_lib
from medjax.data.dataset import Dataset
from medjax.data.datasets.decathlon.source import DecathlonSource, decathlon_sources
from medjax.data.io.volume import ImageFormatError
from medjax.data.preprocess import zscore
from medjax.errors import ConfigError

__all__ = ["DecathlonSource", "decathlon", "decathlon_sources"]


def _float_image(record: pipeline.Example) -> pipeline.Example:
    """Decathlon records are already normalised: fix the dtypes only."""
    example = {}
    for key, value in record.items():
        value = np.asarray(value)
        example[key] = (
            value.astype(np.int32) if key == "mask" else value.astype(np.float32)
        )
    return example


def decathlon(
    root: str,
    shape: tuple[int, ...],
    target_spacing: tuple[float, ...] | None = None,
    normalization: str | None = None,
    window_center: float = 40.0,
    window_width: float = 400.0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 2,
    eval_batch_size: int = 2,
    num_threads: int = 2,
) -> Dataset:
    """A Medical Segmentation Decathlon-style folder (``dataset.json``,
    ``imagesTr/``, ``labelsTr/``) split into ``train`` and ``validation``; cases
    resampled to ``target_spacing``, normalised (``ct`` window or ``zscore``;
    default by modality) and centre-cropped or padded to ``shape``
    (:class:`DecathlonSource`). Batches hold ``image`` and ``mask``."""
    options = dict(
        shape=tuple(shape),
        validation_fraction=validation_fraction,
        seed=seed,
        target_spacing=target_spacing,
        normalization=normalization,
        window=(window_center, window_width),
    )
    try:
        sources = decathlon_sources(root, **options)
    except ImageFormatError as error:
        raise ConfigError(f"data.root: {error}") from None
    kind = sources["train"].normalization
    if kind == "ct":
        normalize = pipeline.CTWindow(window_center, window_width)
    elif kind == "zscore":
        normalize = zscore
    else:
        normalize = None
    return Dataset(
        sources=sources,
        convert=_float_image,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_threads=num_threads,
        spacing=None
        if target_spacing is None
        else tuple(float(s) for s in np.broadcast_to(target_spacing, (len(shape),))),
        normalize=normalize,
        schema={"image": schema_lib.image(), "mask": schema_lib.label_map()},
        name=f"decathlon {root}",
    )
