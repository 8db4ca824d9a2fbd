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

``INFO`` is the table of ``medmnist/info.py`` of MedMNIST/MedMNIST (release
3.0.2, the one that points at that Zenodo record): task types, channels, class
names and official split sizes. Release 3 re-exported OrganA/C/SMNIST with a
few examples fewer than release 2 (e.g. organamnist train 34561, was 34581).

Records of the TFDS builder (``medmnist/<flag>_<size>``, splits ``train``,
``validation`` = MedMNIST's ``val``, ``test``, each in the file's order):

- ``image``: uint8 ``[S, S, C]`` for 2D (grey images, ``[N, S, S]`` in the file,
  get a channel axis; RGB stay ``[S, S, 3]``), uint8 ``[S, S, S, 1]`` for 3D: the
  file's three axes in their stored order followed by a channel axis. MedMNIST
  does not name these axes (its PyTorch code reads them as depth, height,
  width); nothing is transposed, so ``image[..., 0]`` is the file's volume.
- ``label``: a ``ClassLabel`` with the official names for single-label tasks;
  for chestmnist (``multi-label, binary-class``) an int32 ``[14]`` of 0/1.

:func:`medmnist` wraps this as a :class:`~medjax.data.dataset.Dataset` whose
examples are float32 images and int32 labels. Images are scaled as the official
training scripts (MedMNIST/experiments) feed them: 2D with torchvision
``ToTensor`` then ``Normalize(mean=0.5, std=0.5)``, i.e. ``(x/255 - 0.5)/0.5``
in [-1, 1]; 3D with ``x/255`` in [0, 1] (``MedMNIST3D.__getitem__``, no
normalisation after it). ``intensity_range`` picks another range.
"""

import dataclasses
import functools
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from medjax.data import io, schema
from medjax.data.datasets.phantoms import builder as builders
from medjax.data.dataset import Dataset
from medjax.errors import ConfigError

ZENODO_RECORD = "https://zenodo.org/records/10519652"
HOMEPAGE = "https://medmnist.com/"
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)
SPLITS = ("train", "validation", "test")
# MedMNIST's name of each split, as the npz keys spell it.
NPZ_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
MULTI_LABEL = "multi-label, binary-class"
TASK_TYPES = ("multi-class", "binary-class", MULTI_LABEL, "ordinal-regression")
MANUAL_DIR_ENV = "MEDMNIST_DIR"
CITATION = """@article{medmnistv2,
  title={MedMNIST v2-A large-scale lightweight benchmark for 2D and 3D biomedical
         image classification},
  author={Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and
          Zhao, Lin and Ke, Bilian and Pfister, Hanspeter and Ni, Bingbing},
  journal={Scientific Data}, volume={10}, number={1}, pages={41}, year={2023}
}"""


@dataclasses.dataclass(frozen=True)
class FlagInfo:
    """What MedMNIST's ``INFO[flag]`` says of one dataset.

    Attributes:
        task: the task type exactly as MedMNIST names it (one of ``TASK_TYPES``).
        spatial_dims: 2 for images, 3 for volumes.
        num_channels: 1 (grey) or 3 (RGB).
        labels: class names, index ``i`` = label ``i``; for the multi-label
            chestmnist, the name of each of the 14 binary labels.
        num_samples: official examples per split (``validation`` is ``val``).
        license: the data's licence.
    """

    task: str
    spatial_dims: int
    num_channels: int
    labels: tuple[str, ...]
    num_samples: Mapping[str, int]
    license: str


# From medmnist/info.py of github.com/MedMNIST/MedMNIST (release 3.0.2).
# The 11 abdominal organs of OrganA/C/SMNIST and OrganMNIST3D (same order).
ORGAN_LABELS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

INFO: dict[str, FlagInfo] = {
    "pathmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        num_samples={"train": 89996, "validation": 10004, "test": 7180},
        license="CC BY 4.0",
    ),
    "chestmnist": FlagInfo(
        task="multi-label, binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        num_samples={"train": 78468, "validation": 11219, "test": 22433},
        license="CC BY 4.0",
    ),
    "dermamnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        num_samples={"train": 7007, "validation": 1003, "test": 2005},
        license="CC BY-NC 4.0",
    ),
    "octmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "choroidal neovascularization",
            "diabetic macular edema",
            "drusen",
            "normal",
        ),
        num_samples={"train": 97477, "validation": 10832, "test": 1000},
        license="CC BY 4.0",
    ),
    "pneumoniamnist": FlagInfo(
        task="binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "normal",
            "pneumonia",
        ),
        num_samples={"train": 4708, "validation": 524, "test": 624},
        license="CC BY 4.0",
    ),
    "retinamnist": FlagInfo(
        task="ordinal-regression",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "0",
            "1",
            "2",
            "3",
            "4",
        ),
        num_samples={"train": 1080, "validation": 120, "test": 400},
        license="CC BY 4.0",
    ),
    "breastmnist": FlagInfo(
        task="binary-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "malignant",
            "normal, benign",
        ),
        num_samples={"train": 546, "validation": 78, "test": 156},
        license="CC BY 4.0",
    ),
    "bloodmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=3,
        labels=(
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        num_samples={"train": 11959, "validation": 1712, "test": 3421},
        license="CC BY 4.0",
    ),
    "tissuemnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=(
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        num_samples={"train": 165466, "validation": 23640, "test": 47280},
        license="CC BY 4.0",
    ),
    "organamnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 34561, "validation": 6491, "test": 17778},
        license="CC BY 4.0",
    ),
    "organcmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 12975, "validation": 2392, "test": 8216},
        license="CC BY 4.0",
    ),
    "organsmnist": FlagInfo(
        task="multi-class",
        spatial_dims=2,
        num_channels=1,
        labels=ORGAN_LABELS,
        num_samples={"train": 13932, "validation": 2452, "test": 8827},
        license="CC BY 4.0",
    ),
    "organmnist3d": FlagInfo(
        task="multi-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "liver",
            "kidney-right",
            "kidney-left",
            "femur-right",
            "femur-left",
            "bladder",
            "heart",
            "lung-right",
            "lung-left",
            "spleen",
            "pancreas",
        ),
        num_samples={"train": 971, "validation": 161, "test": 610},
        license="CC BY 4.0",
    ),
    "nodulemnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "benign",
            "malignant",
        ),
        num_samples={"train": 1158, "validation": 165, "test": 310},
        license="CC BY 4.0",
    ),
    "adrenalmnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "normal",
            "hyperplasia",
        ),
        num_samples={"train": 1188, "validation": 98, "test": 298},
        license="CC BY 4.0",
    ),
    "fracturemnist3d": FlagInfo(
        task="multi-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "buckle rib fracture",
            "nondisplaced rib fracture",
            "displaced rib fracture",
        ),
        num_samples={"train": 1027, "validation": 103, "test": 240},
        license="CC BY 4.0",
    ),
    "vesselmnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "vessel",
            "aneurysm",
        ),
        num_samples={"train": 1335, "validation": 191, "test": 382},
        license="CC BY 4.0",
    ),
    "synapsemnist3d": FlagInfo(
        task="binary-class",
        spatial_dims=3,
        num_channels=1,
        labels=(
            "inhibitory synapse",
            "excitatory synapse",
        ),
        num_samples={"train": 1230, "validation": 177, "test": 352},
        license="CC BY 4.0",
    ),
}


def _flag_info(flag: str) -> FlagInfo:
    if flag not in INFO:
        raise ConfigError(f"data.flag={flag!r}: expected one of {list(INFO)}")
    return INFO[flag]


def task_type(flag: str) -> str:
    """MedMNIST's task type of ``flag``, e.g. ``"multi-class"``."""
    return _flag_info(flag).task


def num_classes(flag: str) -> int:
    """The number of classes (multi-label chestmnist: of binary labels, 14)."""
    return len(_flag_info(flag).labels)


def class_names(flag: str) -> tuple[str, ...]:
    """The official class (or, for chestmnist, label) names, in label order."""
    return _flag_info(flag).labels


def spatial_dims(flag: str) -> int:
    """2 for the image datasets, 3 for the ``*mnist3d`` volumes."""
    return _flag_info(flag).spatial_dims


def num_channels(flag: str) -> int:
    """Channels of the images: 3 for pathmnist, dermamnist, retinamnist,
    bloodmnist, else 1."""
    return _flag_info(flag).num_channels


def is_multi_label(flag: str) -> bool:
    """Whether ``flag`` has several binary labels per image (chestmnist)."""
    return _flag_info(flag).task == MULTI_LABEL


def available_sizes(flag: str) -> tuple[int, ...]:
    """Image sizes published for ``flag``: 28, 64, 128, 224 (2D); 28, 64 (3D)."""
    return SIZES_2D if _flag_info(flag).spatial_dims == 2 else SIZES_3D


def _check_flag_and_size(flag: str, size: int) -> None:
    sizes = available_sizes(flag)
    if size not in sizes:
        raise ConfigError(
            f"data.size={size!r}: expected one of {list(sizes)} for {flag} "
            f"({spatial_dims(flag)}D)"
        )


def npz_filename(flag: str, size: int) -> str:
    """The official file name: ``<flag>.npz`` at size 28, else
    ``<flag>_<size>.npz``."""
    _check_flag_and_size(flag, size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def npz_url(flag: str, size: int) -> str:
    """Where the file is published (for messages; nothing here downloads it)."""
    return f"{ZENODO_RECORD}/files/{npz_filename(flag, size)}?download=1"


def image_shape(flag: str, size: int) -> tuple[int, ...]:
    """Shape of one record's image: ``[S, S, C]`` (2D) or ``[S, S, S, 1]`` (3D)."""
    _check_flag_and_size(flag, size)
    return (size,) * spatial_dims(flag) + (num_channels(flag),)


def default_manual_dir() -> str:
    """``$MEDMNIST_DIR`` if set, else ``~/.medmnist``."""
    return os.environ.get(MANUAL_DIR_ENV) or str(Path.home() / ".medmnist")


def missing_file_error(
    flag: str, size: int, directory: os.PathLike | str
) -> ConfigError:
    """The one-line error for an npz that is not in ``directory``."""
    name = npz_filename(flag, size)
    return ConfigError(
        f"data.manual_dir: {name} is missing from {os.fspath(directory)}; download "
        f"it yourself from the MedMNIST v2/MedMNIST+ Zenodo record {ZENODO_RECORD} "
        f"({npz_url(flag, size)}) and put it there, or point data.manual_dir or "
        f"${MANUAL_DIR_ENV} at its folder (nothing is downloaded at run time)"
    )


class MedmnistFormatError(io.ImageFormatError, ConfigError):
    """An npz that does not hold what MedMNIST publishes for its flag and size.
    One line, ``"<file>: <what was wrong>"``; a ``ConfigError`` too, so the
    command line reports it without a traceback."""


def _fail(path: os.PathLike | str, problem: str) -> MedmnistFormatError:
    return MedmnistFormatError(f"{os.fspath(path)}: {problem}")


def _read_npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` at the stream's start,
    leaving the stream at the first byte of data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    return tuple(shape), bool(fortran_order), np.dtype(dtype)


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of every array in the npz, from the ``.npy``
    headers alone (nothing is decompressed past them)."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    shape, _, dtype = _read_npy_header(stream)
                headers[member[: -len(".npy")]] = (shape, dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        message = " ".join(str(error).split())  # one line
        raise _fail(path, f"not a readable .npz archive ({message})") from None
    return headers


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _expected_image_shape(flag: str, size: int) -> tuple[int, ...]:
    """Per-example image shape as MedMNIST stores it (grey 2D without channel,
    3D without channel)."""
    if spatial_dims(flag) == 3:
        return (size,) * 3
    return (size, size) if num_channels(flag) == 1 else (size, size, 3)


def _image_kind(flag: str) -> str:
    if spatial_dims(flag) == 3:
        return "grey volumes"
    return "grey images" if num_channels(flag) == 1 else "RGB images"


def _check_labels(path: Path, key: str, labels: np.ndarray, flag: str) -> None:
    if labels.size == 0:
        return
    if is_multi_label(flag):
        values = np.unique(labels)
        if not np.isin(values, (0, 1)).all():
            raise _fail(
                path,
                f"{key} holds values {values.tolist()[:8]}, expected 0 or 1 "
                f"({flag} has {num_classes(flag)} binary labels)",
            )
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes(flag):
        raise _fail(
            path,
            f"{key} holds values {low}..{high}, expected class indices "
            f"0..{num_classes(flag) - 1} ({flag} has {num_classes(flag)} classes)",
        )


def check_npz(path: os.PathLike | str, flag: str, size: int) -> dict[str, int]:
    """Checks that ``path`` holds the official arrays of ``flag`` at ``size``.

    Images must be uint8 ``[N, S, S]`` (2D grey), ``[N, S, S, 3]`` (2D RGB) or
    ``[N, S, S, S]`` (3D); labels of integer type, ``[N, 1]`` (``[N]`` is
    accepted) with values in ``0..num_classes-1``, or ``[N, 14]`` of 0/1 for
    chestmnist. Only the labels are read in full.

    Args:
        path: the ``.npz`` file.
        flag: MedMNIST dataset name, e.g. ``"pathmnist"``.
        size: image size, e.g. 28.

    Returns:
        ``{split: number of examples}`` for ``train``, ``validation``, ``test``.

    Raises:
        MedmnistFormatError: a missing key, wrong dtype, shape, channel count,
            split length or label value; one line naming the file.
    """
    path = Path(path)
    headers = _npz_headers(path)
    wanted = [
        f"{NPZ_SPLIT_NAMES[s]}_{part}" for s in SPLITS for part in ("images", "labels")
    ]
    missing = [key for key in wanted if key not in headers]
    if missing:
        raise _fail(path, f"missing keys {missing}; expected {wanted}")
    example_shape = _expected_image_shape(flag, size)
    multi_label = is_multi_label(flag)
    counts = {}
    with np.load(path, allow_pickle=False) as arrays:
        for split in SPLITS:
            images_key = f"{NPZ_SPLIT_NAMES[split]}_images"
            labels_key = f"{NPZ_SPLIT_NAMES[split]}_labels"
            shape, dtype = headers[images_key]
            expected = "[N, " + _shape_text(example_shape)[1:]
            if len(shape) < 1 or tuple(shape[1:]) != example_shape:
                raise _fail(
                    path,
                    f"{images_key} has shape {_shape_text(shape)}, expected "
                    f"{expected} ({flag} at size {size}: {_image_kind(flag)})",
                )
            if dtype != np.uint8:
                raise _fail(path, f"{images_key} has dtype {dtype}, expected uint8")
            count = shape[0]
            if count == 0:
                raise _fail(path, f"{images_key} holds no images, expected N >= 1")
            label_shape, label_dtype = headers[labels_key]
            allowed = (
                [(count, num_classes(flag))] if multi_label else [(count, 1), (count,)]
            )
            if tuple(label_shape) not in allowed:
                raise _fail(
                    path,
                    f"{labels_key} has shape {_shape_text(label_shape)}, "
                    f"expected {' or '.join(_shape_text(s) for s in allowed)} "
                    f"(one row per image of {images_key})",
                )
            if not (np.issubdtype(label_dtype, np.integer) or label_dtype == np.bool_):
                raise _fail(
                    path, f"{labels_key} has dtype {label_dtype}, expected integers"
                )
            _check_labels(path, labels_key, arrays[labels_key], flag)
            counts[split] = count
    return counts


def load_labels(path: os.PathLike | str, flag: str, split: str) -> np.ndarray:
    """The labels of one split of an official npz, in the file's order.

    Args:
        path: the ``.npz`` file (checked with :func:`check_npz` first).
        flag: MedMNIST dataset name.
        split: ``train``, ``validation`` or ``test``.

    Returns:
        int64 ``[N]`` class indices, or int32 ``[N, 14]`` of 0/1 for chestmnist.
    """
    with np.load(path, allow_pickle=False) as arrays:
        labels = arrays[f"{NPZ_SPLIT_NAMES[split]}_labels"]
    if is_multi_label(flag):
        return labels.astype(np.int32)
    return labels.reshape(len(labels)).astype(np.int64)


def iter_images(path: os.PathLike | str, flag: str, split: str) -> Iterator[np.ndarray]:
    """The images of one split of an official npz, one at a time, in the file's
    order, channels last.

    Images are read from the archive as a stream, so memory holds one image,
    not the split (pathmnist_224's train split alone is 13.5 GB).

    Args:
        path: the ``.npz`` file (checked with :func:`check_npz` first).
        flag: MedMNIST dataset name.
        split: ``train``, ``validation`` or ``test``.

    Yields:
        uint8 ``[S, S, C]`` (2D) or ``[S, S, S, 1]`` (3D).
    """
    key = f"{NPZ_SPLIT_NAMES[split]}_images"
    add_channel = spatial_dims(flag) == 3 or num_channels(flag) == 1
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as stream:
        shape, fortran_order, dtype = _read_npy_header(stream)
        if fortran_order:  # rows are not contiguous: read the whole array
            stream.seek(0)
            rows = np.lib.format.read_array(stream, allow_pickle=False)
        else:
            rows = None
        row_shape = tuple(shape[1:])
        row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        for index in range(shape[0]):
            if rows is not None:
                image = np.ascontiguousarray(rows[index])
            else:
                buffer = stream.read(row_bytes)
                if len(buffer) != row_bytes:
                    raise _fail(path, f"{key} ends after {index} of {shape[0]} images")
                image = np.frombuffer(buffer, dtype).reshape(row_shape)
            yield image[..., None] if add_channel else image


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
    _check_flag_and_size(flag, size)
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


def _builder(flag: str, size: int, data_dir: str | None) -> Medmnist:
    data_dir = os.path.expanduser(data_dir or builders.default_data_dir())
    return Medmnist(
        config=medmnist_config(flag, size).name,
        data_dir=data_dir,
        file_format="array_record",
    )


def _check_split_sizes(split_sizes: Mapping[str, int] | None) -> dict[str, int]:
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


def _npz_path(flag: str, size: int, manual_dir: str | None) -> Path:
    """The npz of ``flag`` at ``size`` in ``manual_dir``, which must exist."""
    directory = Path(os.path.expanduser(manual_dir or default_manual_dir()))
    path = directory / npz_filename(flag, size)
    if not path.is_file():
        raise missing_file_error(flag, size, directory)
    return path


def _prepare(builder: Medmnist, manual_dir: str | None) -> None:
    """Checks the npz and writes the dataset from it, unless already prepared."""
    if builder.is_prepared():
        return
    config = builder.builder_config
    path = _npz_path(config.flag, config.size, manual_dir)
    check_npz(path, config.flag, config.size)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(path.parent))
    )


def _data_sources(builder: Medmnist, split_sizes: Mapping[str, int]) -> dict[str, Any]:
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
    split_sizes = _check_split_sizes(split_sizes)
    builder = _builder(flag, size, data_dir)
    _prepare(builder, manual_dir)
    return _data_sources(builder, split_sizes)


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
    _check_flag_and_size(flag, size)
    split_sizes = _check_split_sizes(split_sizes)
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
    builder = _builder(flag, size, data_dir)
    if not builder.is_prepared():  # fail now, before anything is compiled
        path = _npz_path(flag, size, manual_dir)
        check_npz(path, flag, size)

    def build() -> dict[str, Any]:
        # The npz was checked above; _prepare checks it again (labels only,
        # cheap) in case it was replaced since.
        _prepare(builder, manual_dir)
        return _data_sources(builder, split_sizes)

    return Dataset(
        sources=builders.LazySources(SPLITS, build),
        convert=functools.partial(convert_record, scaling=scaling),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_threads=num_threads,
        spacing=spacing,
        normalize=scaling,
        schema={"image": schema.image(), "label": schema.CLASS},
        name=f"medmnist/{flag}_{size}",
    )
