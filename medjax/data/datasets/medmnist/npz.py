"""The official MedMNIST ``.npz`` files: where they are looked for, checking that
one holds what MedMNIST publishes for its flag and size, and reading its labels
and (streamed, one at a time) its images.

Each ``(flag, size)`` is one file, ``<flag>.npz`` at size 28 and
``<flag>_<size>.npz`` otherwise, with the uint8 arrays ``train_images,
train_labels, val_images, val_labels, test_images, test_labels``.
"""

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medjax.data.datasets.medmnist.info import (
    MANUAL_DIR_ENV,
    NPZ_SPLIT_NAMES,
    SPLITS,
    ZENODO_RECORD,
    is_multi_label,
    npz_filename,
    npz_url,
    num_channels,
    num_classes,
    spatial_dims,
)
from medjax.data.io.volume import ImageFormatError
from medjax.errors import ConfigError


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


class MedmnistFormatError(ImageFormatError, ConfigError):
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


#: What zipfile and zlib raise for an archive whose member data is damaged or
#: cut short (the directory and .npy headers may still read fine).
DAMAGED_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


def _damaged(path, key: str, error: BaseException) -> MedmnistFormatError:
    message = " ".join(str(error).split()) or type(error).__name__
    return _fail(path, f"{key} cannot be read ({message}); damaged or truncated?")


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
            try:
                labels = arrays[labels_key]
            except DAMAGED_ARCHIVE_ERRORS as error:
                raise _damaged(path, labels_key, error) from None
            _check_labels(path, labels_key, labels, flag)
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
    key = f"{NPZ_SPLIT_NAMES[split]}_labels"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            labels = arrays[key]
    except DAMAGED_ARCHIVE_ERRORS as error:
        raise _damaged(path, key, error) from None
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
    try:
        yield from _stream_images(path, key, add_channel=(
            spatial_dims(flag) == 3 or num_channels(flag) == 1
        ))
    except MedmnistFormatError:
        raise
    except DAMAGED_ARCHIVE_ERRORS as error:
        raise _damaged(path, key, error) from None


def _stream_images(path, key: str, *, add_channel: bool) -> Iterator[np.ndarray]:
    """``iter_images`` without the translation of archive errors."""
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
