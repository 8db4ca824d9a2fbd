"""The in-memory image every loader returns, and the error every loader raises.

Everything here runs on the host with numpy; nothing imports JAX.

Conventions, shared by every loader:

* A :class:`Volume` holds ``array`` with the spatial axes first, in *voxel index
  order* ``(i, j, k)`` as nibabel gives them (extra axes, such as the modalities of
  a 4D Decathlon image, come after), and ``affine``, the 4x4 map from voxel index
  ``(i, j, k, 1)`` to world coordinates in millimetres, RAS+ (+x towards the
  patient's Right, +y Anterior, +z Superior), the NIfTI convention. Voxel centres
  sit at integer indices.
* DICOM patient coordinates are LPS+; the loader flips the signs of x and y so a
  DICOM series and its NIfTI conversion (dcm2niix, nibabel) agree in world space.
  A DICOM series is indexed ``(column i, row j, slice k)``: each slice's
  ``pixel_array`` (rows, columns) is transposed, so ``i`` runs along a row (the
  ImageOrientationPatient *row* cosine, spacing ``PixelSpacing[1]``), ``j`` down a
  column (the *column* cosine, spacing ``PixelSpacing[0]``), and ``k`` along the
  slice normal ``row x column`` in increasing position. dcm2niix may store the same
  scan with some axes flipped; the world coordinate of every voxel is the same.
* PNG images stay in image order ``(row, column)`` = ``(H, W)`` with an identity
  affine (1 unit per pixel), which is what the 2D models' ``[H, W, C]`` expect.

Bad files raise :class:`ImageFormatError`, one line that starts with the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medjax.errors import InputError

PathLike = str | os.PathLike


class ImageFormatError(InputError):
    """A file that cannot be read or does not fit the others; the message is one
    line: ``"<file>: <what was wrong>"``."""


def format_error(path: PathLike, problem: str) -> ImageFormatError:
    """The one-line error ``"<path>: <problem>"``."""
    return ImageFormatError(f"{os.fspath(path)}: {problem}")


def one_line(error: BaseException) -> str:
    """A library's error message on one line (its type name when it is empty)."""
    return " ".join(str(error).split()) or type(error).__name__


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """An image or label map with its geometry.

    Attributes:
        array: ``[X, Y(, Z)(, C)]`` voxels, spatial axes first in index order.
        affine: ``[4, 4]`` voxel index -> world RAS+ mm (NIfTI convention).
        source: the format it came from: ``"nifti"``, ``"dicom"``, ``"png"`` or
            ``"array"`` (made in memory, e.g. by resampling).
        path: the file or directory it was read from, if any.
        header: the NIfTI header it was read with (copied into masks written
            ``like`` it), else None.
        datasets: for DICOM, one pydicom Dataset per slice ``k`` (without pixel
            data), used to write a mask series with the same geometry; empty when
            the geometry no longer matches (after resampling) or for other formats.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = "array"
    path: str | None = None
    header: Any = None
    datasets: tuple = ()

    @property
    def spatial_ndim(self) -> int:
        """2 for a 2D image, else 3 (axes after the third are channels or time)."""
        return min(self.array.ndim, 3)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[: self.spatial_ndim])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial index axis: the column norms of
        ``affine[:3, :ndim]``."""
        columns = np.asarray(self.affine)[:3, : self.spatial_ndim]
        return tuple(float(s) for s in np.linalg.norm(columns, axis=0))

    def world(self, index: Sequence[float]) -> np.ndarray:
        """World RAS+ mm ``[3]`` of the voxel (centre) at ``index`` (missing axes 0)."""
        homogeneous = np.zeros(4)
        homogeneous[: len(index)] = index
        homogeneous[3] = 1.0
        return (np.asarray(self.affine) @ homogeneous)[:3]
