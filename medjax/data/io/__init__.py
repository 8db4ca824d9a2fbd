"""Medical image files in and out: NIfTI, DICOM series and PNG, one module each.

``load_image`` and ``save_like`` pick the format from the path; the format modules'
loaders and writers are re-exported here, so ``io.load_nifti(path)`` and
``io.Volume`` work after ``from medjax.data import io``. Everything here runs on
the host with numpy; nothing imports JAX. The conventions every loader shares
(index order, RAS+ affines) are in ``medjax.data.io.volume``.

Host preprocessing (``ct_window``, ``zscore``, ``resample_to_spacing``,
``center_crop_or_pad``) is in ``medjax.data.preprocess``, overlay figures in
``medjax.viz.overlay``, the Decathlon folders in
``medjax.data.datasets.decathlon``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medjax.data.io.dicom import (
    LPS_TO_RAS,
    SEGMENTATION_DESCRIPTION,
    is_dicom_file,
    load_dicom_series,
    save_dicom_series,
)
from medjax.data.io.nifti import is_nifti_path, load_nifti, save_nifti
from medjax.data.io.png import load_png, save_png_mask
from medjax.data.io.volume import ImageFormatError, PathLike, Volume, format_error

__all__ = [
    "LPS_TO_RAS",
    "SEGMENTATION_DESCRIPTION",
    "ImageFormatError",
    "PathLike",
    "Volume",
    "load_dicom_series",
    "load_image",
    "load_nifti",
    "load_png",
    "save_dicom_series",
    "save_like",
    "save_nifti",
    "save_png_mask",
]


# Names that lived here before the split, resolved on first use so that
# ``io.resample_to_spacing`` in code written against the old module keeps working
# (an eager import of ``medjax.viz`` from here would be circular). New code imports
# them from their homes.

def load_image(path: PathLike) -> Volume:
    """Reads ``.nii``/``.nii.gz`` (NIfTI), ``.png``, or a directory / ``.dcm`` file
    (DICOM series); other files are tried as DICOM."""
    name = os.fspath(path).lower()
    if is_nifti_path(name):
        return load_nifti(path)
    if name.endswith(".png"):
        return load_png(path)
    if not os.path.exists(path):
        raise format_error(path, "no such file or directory")
    if os.path.isdir(path) or name.endswith(".dcm"):
        return load_dicom_series(path)
    if is_dicom_file(path):
        return load_dicom_series(path)
    raise format_error(
        path,
        "unknown image format (expected .nii, .nii.gz, .png, .dcm or a "
        "DICOM directory)",
    )


def save_like(mask: np.ndarray, reference: Volume, path: PathLike) -> Path:
    """Writes ``mask`` with ``reference``'s geometry, in the format ``path`` names:
    ``.nii``/``.nii.gz`` -> NIfTI with the reference affine (and header, if it was
    NIfTI), ``.png`` -> PNG label map, anything else -> a DICOM label-map series in
    directory ``path`` (the reference must come from DICOM).

    Raises:
        ImageFormatError: the mask's shape differs from the reference's.
    """
    mask = np.asarray(mask)
    if mask.shape != reference.spatial_shape:
        raise format_error(
            path,
            f"mask shape {mask.shape} does not match image {reference.spatial_shape}",
        )
    name = os.fspath(path).lower()
    if is_nifti_path(name):
        like = reference if reference.source == "nifti" else None
        return save_nifti(mask, path, affine=reference.affine, like=like)
    if name.endswith(".png"):
        return save_png_mask(mask, path)
    if reference.source == "dicom":
        save_dicom_series(mask, reference, path)
        return Path(path)
    raise format_error(
        path,
        f"cannot write a {reference.source} reference's mask here (use "
        ".nii.gz or .png)",
    )
