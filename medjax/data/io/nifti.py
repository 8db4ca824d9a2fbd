"""NIfTI (``.nii``, ``.nii.gz``) in and out through nibabel.

Arrays keep nibabel's voxel index order ``(i, j, k)`` and affine (RAS+ mm); see
``medjax.data.io.volume`` for the conventions every loader shares.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from medjax.data.io.volume import PathLike, Volume, format_error, one_line
from medjax.files import atomic_path


def is_nifti_path(path: PathLike) -> bool:
    """Whether the file name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    name = os.fspath(path).lower()
    return name.endswith((".nii", ".nii.gz"))


def load_nifti(path: PathLike) -> Volume:
    """Reads a ``.nii`` or ``.nii.gz`` file.

    Integer data without scaling keeps its integer dtype (label maps); anything
    else (float data, or integers with ``scl_slope``/``scl_inter``) comes back as
    float32 with the scaling applied. The affine is nibabel's (sform, else qform).

    Raises:
        ImageFormatError: a missing, empty, truncated or damaged file, or one
            that is not 2D to 4D (spatial axes, then channels or time).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if not os.path.exists(path):
        raise format_error(path, "no such file")
    if os.path.isdir(path):
        raise format_error(path, "a directory, not a NIfTI file")
    if not is_nifti_path(path):
        raise format_error(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        image = nib.load(os.fspath(path))
        # np.array copies, so no memory map keeps the file open.
        data = np.array(np.asanyarray(image.dataobj))
    except (ImageFileError, HeaderDataError, OSError, EOFError, ValueError,
            OverflowError, zlib.error) as error:
        # What nibabel, gzip and numpy raise for files that are not NIfTI, a
        # truncated data block or gzip stream, or header fields out of range.
        raise format_error(
            path, f"not a readable NIfTI file ({one_line(error)})"
        ) from None
    if not 2 <= data.ndim <= 4:
        raise format_error(
            path, f"image of shape {data.shape}: expected 2D or 3D (a 4th axis: "
            "channels or time)"
        )
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != np.bool_:
        data = data.astype(np.float32)
    elif not data.dtype.isnative:  # e.g. big-endian int16; numpy/JAX want native
        data = data.astype(data.dtype.newbyteorder("="))
    return Volume(
        array=data,
        affine=np.asarray(image.affine, np.float64),
        source="nifti",
        path=os.fspath(path),
        header=image.header.copy(),
    )


def _storage_dtype(array: np.ndarray) -> np.dtype:
    """uint8 or int16 (int32 if needed) for labels; float32 for the rest."""
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= 0 and high <= 255:
            return np.dtype(np.uint8)
        if low >= -32768 and high <= 32767:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    return np.dtype(np.float32)


def save_nifti(
    volume_or_array: Volume | np.ndarray,
    path: PathLike,
    *,
    affine: np.ndarray | None = None,
    like: Volume | None = None,
) -> Path:
    """Writes a ``.nii`` / ``.nii.gz`` file and returns its path.

    Args:
        volume_or_array: a Volume, or an array ``[X, Y(, Z)(, C)]`` in index order.
        path: where to write (parent folders are made).
        affine: ``[4, 4]`` voxel -> RAS+ mm; default: the volume's, else ``like``'s,
            else the identity.
        like: a reference NIfTI Volume whose header (units, intent, sform/qform
            codes) is copied; its scaling is dropped.

    Integer and bool arrays are stored as uint8 when they fit in 0..255, else int16
    (int32 if they do not fit); floats as float32. The file is written under a
    temporary name and renamed, so a failed write leaves a previous file intact.

    Raises:
        WriteError: the file could not be written (full disk, no permission).
    """
    import nibabel as nib

    if not is_nifti_path(path):
        raise format_error(path, "a NIfTI file name must end in .nii or .nii.gz")
    if isinstance(volume_or_array, Volume):
        array = volume_or_array.array
        if affine is None:
            affine = volume_or_array.affine
        if like is None and volume_or_array.header is not None:
            like = volume_or_array
    else:
        array = np.asarray(volume_or_array)
    if affine is None:
        affine = like.affine if like is not None else np.eye(4)
    affine = np.asarray(affine, np.float64)
    dtype = _storage_dtype(array)

    reference = getattr(like, "header", None)
    if isinstance(reference, nib.Nifti1Header):
        header = reference.copy()
        sform_code = int(reference["sform_code"])
        qform_code = int(reference["qform_code"])
    else:
        header = nib.Nifti1Header()
        sform_code = qform_code = 0
    if sform_code == 0 and qform_code == 0:
        sform_code = qform_code = 1  # scanner anatomical, as dcm2niix writes
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(array.astype(dtype), affine, header)
    image.header.set_slope_inter(np.nan, np.nan)
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine, code=qform_code)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through a temporary name that ends like ``path`` (nibabel picks .nii.gz
    # compression from it): a failed write keeps the previous file.
    with atomic_path(path) as temporary:
        nib.save(image, temporary)
    return path
