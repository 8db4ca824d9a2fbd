"""TFDS builder ``medmnist``: one config ``<flag>_<size>`` per official npz, written
as array_record from a manual download, and the random-access sources of its
splits.

Records (``medmnist/<flag>_<size>``, splits ``train``, ``validation`` = MedMNIST's
``val``, ``test``, each in the file's order):

- ``image``: uint8 ``[S, S, C]`` for 2D (grey images, ``[N, S, S]`` in the file,
  get a channel axis; RGB stay ``[S, S, 3]``), uint8 ``[S, S, S, 1]`` for 3D: the
  file's three axes in their stored order followed by a channel axis. MedMNIST
  does not name these axes (its PyTorch code reads them as depth, height,
  width); nothing is transposed, so ``image[..., 0]`` is the file's volume.
- ``label``: a ``ClassLabel`` with the official names for single-label tasks;
  for chestmnist (``multi-label, binary-class``) an int32 ``[14]`` of 0/1.
"""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from medjax.data.datasets.medmnist.info import (
    CITATION,
    HOMEPAGE,
    INFO,
    MANUAL_DIR_ENV,
    MULTI_LABEL,
    SPLITS,
    ZENODO_RECORD,
    available_sizes,
    check_flag_and_size,
    class_names,
    image_shape,
    is_multi_label,
    npz_filename,
    num_classes,
)
from medjax.data.datasets.medmnist.npz import (
    check_npz,
    default_manual_dir,
    iter_images,
    load_labels,
    missing_file_error,
)
from medjax.data.sources import default_data_dir, writable_data_dir
from medjax.errors import ConfigError


@dataclasses.dataclass
class MedmnistConfig(tfds.core.BuilderConfig):
    """One official MedMNIST file: ``flag`` at ``size`` pixels a side."""

    flag: str = "pathmnist"
    size: int = 28


def medmnist_config(flag: str = "pathmnist", size: int = 28) -> MedmnistConfig:
    """The config ``<flag>_<size>`` (e.g. ``pathmnist_64``).

    Raises:
        ConfigError: an unknown flag or a size not published for it.
    """
    check_flag_and_size(flag, size)
    info = INFO[flag]
    return MedmnistConfig(
        name=f"{flag}_{size}",
        description=(
            f"{flag} ({info.task}, {len(info.labels)} "
            f"{'labels' if info.task == MULTI_LABEL else 'classes'}) at {size} px, "
            f"from {npz_filename(flag, size)}"
        ),
        flag=flag,
        size=size,
    )


class Medmnist(tfds.core.GeneratorBasedBuilder):
    """MedMNIST v2 / MedMNIST+ from the official ``.npz`` files (manual download).

    Configs ``medmnist/<flag>_<size>`` for every published file. Prepare with
    ``download_and_prepare(download_config=tfds.download.DownloadConfig(
    manual_dir=...), file_format="array_record")`` and read with
    ``as_data_source``, or use :func:`medmnist_sources`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "MedMNIST v2/MedMNIST+ (medmnist 3.0.2 release, Zenodo 10519652).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download the files you need yourself from the MedMNIST v2/MedMNIST+ Zenodo
    record {ZENODO_RECORD} into the manual directory (medjax: data.manual_dir,
    else ${MANUAL_DIR_ENV}, else ~/.medmnist). The name of each file is
    <flag>.npz for 28 px and <flag>_<size>.npz for 64, 128, 224 (2D) and 64
    (3D), e.g. pathmnist.npz, pathmnist_64.npz, organmnist3d_64.npz. Files the
    `medmnist` package downloaded (to ~/.medmnist) are the same files.
    """
    BUILDER_CONFIGS: ClassVar[list[MedmnistConfig]] = [
        medmnist_config(flag, size) for flag in INFO for size in available_sizes(flag)
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        flag = config.flag
        if is_multi_label(flag):
            label = tfds.features.Tensor(
                shape=(num_classes(flag),),
                dtype=np.int32,
                doc=f"0/1 for each of {list(class_names(flag))}",
            )
        else:
            label = tfds.features.ClassLabel(names=list(class_names(flag)))
        shape = image_shape(flag, config.size)
        axes = "[S, S, C]" if len(shape) == 3 else "[S, S, S, 1], the file's axis order"
        features = {
            "image": tfds.features.Tensor(
                shape=shape, dtype=np.uint8, encoding="zlib", doc=f"uint8 {axes}"
            ),
            "label": label,
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            homepage=HOMEPAGE,
            citation=CITATION,
            # Record i of a split is example i of the official file.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        try:
            directory = Path(dl_manager.manual_dir)
        except AssertionError:  # tfds refuses a missing or empty directory
            directory = Path(getattr(dl_manager, "_manual_dir", "") or "<manual_dir>")
        path = directory / npz_filename(config.flag, config.size)
        if not path.is_file():
            raise missing_file_error(config.flag, config.size, directory)
        check_npz(path, config.flag, config.size)
        return {split: self._generate_examples(path, split) for split in SPLITS}

    def _generate_examples(self, path: Path, split: str):
        config = self.builder_config
        labels = load_labels(path, config.flag, split)
        for index, image in enumerate(iter_images(path, config.flag, split)):
            yield index, {"image": image, "label": labels[index]}


def medmnist_builder(flag: str, size: int, data_dir: str | None) -> Medmnist:
    """The builder of ``<flag>_<size>`` writing array_record under ``data_dir``
    (default :func:`medjax.data.sources.default_data_dir`)."""
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    return Medmnist(
        config=medmnist_config(flag, size).name,
        data_dir=data_dir,
        file_format="array_record",
    )


def check_split_sizes(split_sizes: Mapping[str, int] | None) -> dict[str, int]:
    split_sizes = dict(split_sizes or {})
    unknown = sorted(set(split_sizes) - set(SPLITS))
    if unknown:
        raise ConfigError(
            f"data.split_sizes: unknown splits {unknown}; expected {list(SPLITS)}"
        )
    for split, count in split_sizes.items():
        if int(count) < 1:
            raise ConfigError(f"data.split_sizes.{split}={count}: expected >= 1")
    return {split: int(count) for split, count in split_sizes.items()}


def find_npz(flag: str, size: int, manual_dir: str | None) -> Path:
    """The npz of ``flag`` at ``size`` in ``manual_dir``, which must exist."""
    directory = Path(os.path.expanduser(manual_dir or default_manual_dir()))
    path = directory / npz_filename(flag, size)
    if not path.is_file():
        raise missing_file_error(flag, size, directory)
    return path


def prepare(builder: Medmnist, manual_dir: str | None) -> None:
    """Checks the npz and writes the dataset from it, unless already prepared."""
    if builder.is_prepared():
        return
    config = builder.builder_config
    path = find_npz(config.flag, config.size, manual_dir)
    check_npz(path, config.flag, config.size)
    writable_data_dir(os.fspath(builder.data_dir_root))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(path.parent))
    )


def data_sources(builder: Medmnist, split_sizes: Mapping[str, int]) -> dict[str, Any]:
    sources = {}
    for split in SPLITS:
        available = builder.info.splits[split].num_examples
        count = split_sizes.get(split)
        if count is not None and count > available:
            raise ConfigError(
                f"data.split_sizes.{split}={count}: the {split} split has only "
                f"{available} examples"
            )
        name = split if count is None else f"{split}[:{count}]"
        sources[split] = builder.as_data_source(split=name)
    return sources


def medmnist_sources(
    flag: str = "pathmnist",
    size: int = 28,
    manual_dir: str | None = None,
    data_dir: str | None = None,
    split_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Random-access sources of every split, preparing the dataset from the
    npz in ``manual_dir`` on first use.

    Args:
        flag: MedMNIST dataset name, e.g. ``"pathmnist"`` (see ``INFO``).
        size: 28, 64, 128 or 224 (2D); 28 or 64 (3D).
        manual_dir: folder holding the official npz; default
            :func:`default_manual_dir`.
        data_dir: TFDS data directory; default ``$MEDJAX_DATA``, else
            ``~/.cache/medjax/tensorflow_datasets``.
        split_sizes: ``{split: count}``: only the first ``count`` records.

    Returns:
        ``{split: source}`` for ``train``, ``validation``, ``test``;
        ``source[i]`` is ``{"image": uint8 [S, S, C] or [S, S, S, 1],
        "label": int class index, or int32 [14] of 0/1 for chestmnist}``.

    Raises:
        ConfigError: an unknown flag or size, or the npz is missing (the message
            names the file, the folder and where to download it).
        MedmnistFormatError: the npz does not hold the official arrays.
    """
    split_sizes = check_split_sizes(split_sizes)
    builder = medmnist_builder(flag, size, data_dir)
    prepare(builder, manual_dir)
    return data_sources(builder, split_sizes)
