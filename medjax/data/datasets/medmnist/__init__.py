"""MedMNIST v2 / MedMNIST+ as a TFDS builder (``medmnist``) and a medjax dataset.

MedMNIST (Yang et al., Scientific Data 2023) is 18 standardised biomedical image
classification datasets: 12 of 2D images at 28, 64, 128 and 224 pixels and 6 of
3D volumes at 28 and 64 voxels a side (the larger sizes are "MedMNIST+"). Each
``(flag, size)`` is one ``.npz`` file, ``<flag>.npz`` at size 28 and
``<flag>_<size>.npz`` otherwise, with the arrays ``train_images, train_labels,
val_images, val_labels, test_images, test_labels`` (uint8). The files are not
downloaded at run time: fetch them yourself from the Zenodo record
https://zenodo.org/records/10519652 into ``$MEDMNIST_DIR`` (default
``~/.medmnist``, the ``medmnist`` package's own root, so files it downloaded are
found).

The package: ``info.py`` (``INFO``, the official table of every flag),
``npz.py`` (checking and reading the files), ``builder.py`` (the TFDS builder and
its sources), and here the medjax dataset, :func:`medmnist`.

:func:`medmnist` wraps the builder's records (described in ``builder.py``) as a
:class:`~medjax.data.dataset.Dataset` whose examples are float32 images and int32
labels. Images are scaled as the official
training scripts (MedMNIST/experiments) feed them: 2D with torchvision
``ToTensor`` then ``Normalize(mean=0.5, std=0.5)``, i.e. ``(x/255 - 0.5)/0.5``
in [-1, 1]; 3D with ``x/255`` in [0, 1] (``MedMNIST3D.__getitem__``, no
normalisation after it). ``intensity_range`` picks another range.
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from medjax.data import schema as schema_lib
from medjax.data.dataset import Dataset
from medjax.data.datasets.medmnist.builder import (
    Medmnist,
    MedmnistConfig,
    check_split_sizes,
    data_sources,
    find_npz,
    medmnist_builder,
    medmnist_config,
    medmnist_sources,
    prepare,
)
from medjax.data.datasets.medmnist.info import (
    INFO,
    MULTI_LABEL,
    SPLITS,
    TASK_TYPES,
    FlagInfo,
    available_sizes,
    check_flag_and_size,
    class_names,
    image_shape,
    is_multi_label,
    npz_filename,
    npz_url,
    num_channels,
    num_classes,
    spatial_dims,
    task_type,
)
from medjax.data.datasets.medmnist.npz import (
    MedmnistFormatError,
    check_npz,
    default_manual_dir,
    iter_images,
    load_labels,
)
from medjax.data.sources import LazySources
from medjax.errors import ConfigError

__all__ = [
    "INFO",
    "MULTI_LABEL",
    "SPLITS",
    "TASK_TYPES",
    "FlagInfo",
    "Medmnist",
    "MedmnistConfig",
    "MedmnistFormatError",
    "UInt8Scaling",
    "available_sizes",
    "check_npz",
    "class_names",
    "convert_record",
    "default_manual_dir",
    "image_shape",
    "is_multi_label",
    "iter_images",
    "load_labels",
    "medmnist",
    "medmnist_config",
    "medmnist_sources",
    "npz_filename",
    "npz_url",
    "num_channels",
    "num_classes",
    "official_intensity_range",
    "spatial_dims",
    "task_type",
]


@dataclasses.dataclass(frozen=True)
class UInt8Scaling:
    """Maps uint8 intensities linearly from [0, 255] to ``[low, high]``.

    ``UInt8Scaling(-1, 1)`` is ``(x / 255 - 0.5) / 0.5``, the ``ToTensor`` then
    ``Normalize(0.5, 0.5)`` of the official 2D training script;
    ``UInt8Scaling(0, 1)`` is ``x / 255`` (``ToTensor``; 3D MedMNIST).
    """

    low: float = -1.0
    high: float = 1.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        unit = np.asarray(image, np.float32) / np.float32(255.0)
        return unit * np.float32(self.high - self.low) + np.float32(self.low)


def official_intensity_range(flag: str) -> tuple[float, float]:
    """(-1, 1) for 2D flags, (0, 1) for 3D ones, as MedMNIST/experiments train."""
    return (-1.0, 1.0) if spatial_dims(flag) == 2 else (0.0, 1.0)


def _check_intensity_range(intensity_range, flag: str) -> tuple[float, float]:
    if intensity_range is None:
        return official_intensity_range(flag)
    values = np.atleast_1d(intensity_range).tolist()
    if len(values) != 2 or not float(values[0]) < float(values[1]):
        raise ConfigError(
            f"data.intensity_range={values}: expected [low, high] with low < high"
        )
    return float(values[0]), float(values[1])


def convert_record(
    record: Mapping[str, np.ndarray], scaling: UInt8Scaling
) -> dict[str, np.ndarray]:
    """A ``medmnist`` record to the batch convention: ``image`` float32 through
    ``scaling`` (shape unchanged), ``label`` int32 (scalar, or ``[14]``)."""
    example = {}
    for key, value in record.items():
        if key == "image":
            example[key] = scaling(value)
        elif key == "label":
            example[key] = np.asarray(value, np.int32)
        else:
            example[key] = np.asarray(value)
    return example


def medmnist(
    flag: str = "pathmnist",
    size: int = 28,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 256,
    num_threads: int = 2,
    intensity_range: tuple[float, float] | None = None,
    split_sizes: Mapping[str, int] | None = None,
    spacing: tuple[float, ...] | None = None,
) -> Dataset:
    """A MedMNIST dataset (``train``, ``validation``, ``test``: the official
    splits in their order) of ``{"image": float32, "label": int32}`` examples.

    ``image`` is ``[S, S, C]`` (2D) or ``[S, S, S, 1]`` (3D), scaled from uint8 to
    ``intensity_range``; ``label`` is a class index, or ``[14]`` of 0/1 for
    chestmnist. The npz is checked now, the TFDS files are written on first read
    (so knowing a run's data writes nothing); delete
    ``<data_dir>/medmnist/<flag>_<size>`` to rebuild from a replaced npz.

    Args:
        flag: MedMNIST dataset name (see ``INFO``), e.g. ``"pathmnist"``.
        size: 28, 64, 128 or 224 for 2D flags, 28 or 64 for 3D ones.
        manual_dir: folder with ``<flag>.npz`` / ``<flag>_<size>.npz``; default
            ``$MEDMNIST_DIR``, else ``~/.medmnist``.
        data_dir: TFDS data directory; default ``$MEDJAX_DATA``, else
            ``~/.cache/medjax/tensorflow_datasets``.
        batch_size: global training batch.
        eval_batch_size: global evaluation batch.
        num_threads: grain reader threads per process.
        intensity_range: ``(low, high)`` that uint8 0 and 255 map to; None: the
            official training scripts' scaling, (-1, 1) for 2D, (0, 1) for 3D.
        split_sizes: ``{split: count}`` (smoke runs, tests): only the first
            ``count`` records of those splits.
        spacing: voxel size in mm, if you know it (MedMNIST does not give one;
            None: unknown).

    Returns:
        A :class:`~medjax.data.dataset.Dataset` whose ``normalize`` is the same
        uint8 scaling, for new images.

    Raises:
        ConfigError: unknown flag or size, bad options, or a missing npz (the
            message names the file, the folder and the Zenodo record).
        MedmnistFormatError: the npz does not hold the official arrays.
    """
    check_flag_and_size(flag, size)
    split_sizes = check_split_sizes(split_sizes)
    low, high = _check_intensity_range(intensity_range, flag)
    if spacing is not None:
        spacing = tuple(float(s) for s in np.atleast_1d(spacing))
        if len(spacing) == 1:
            spacing *= spatial_dims(flag)
        if len(spacing) != spatial_dims(flag) or min(spacing) <= 0:
            raise ConfigError(
                f"data.spacing={list(spacing)}: expected one positive number or "
                f"{spatial_dims(flag)} ({flag} is {spatial_dims(flag)}D)"
            )
    scaling = UInt8Scaling(low, high)
    builder = medmnist_builder(flag, size, data_dir)
    if not builder.is_prepared():  # fail now, before anything is compiled
        path = find_npz(flag, size, manual_dir)
        check_npz(path, flag, size)

    def build() -> dict[str, Any]:
        # The npz was checked above; _prepare checks it again (labels only,
        # cheap) in case it was replaced since.
        prepare(builder, manual_dir)
        return data_sources(builder, split_sizes)

    return Dataset(
        sources=LazySources(SPLITS, build),
        convert=functools.partial(convert_record, scaling=scaling),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_threads=num_threads,
        spacing=spacing,
        normalize=scaling,
        schema={"image": schema_lib.image(), "label": schema_lib.CLASS},
        name=f"medmnist/{flag}_{size}",
    )
