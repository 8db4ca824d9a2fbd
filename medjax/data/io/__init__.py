"""Medical image files in and out: NIfTI, DICOM series, PNG, and Decathlon folders.

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

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.ndimage

PathLike = str | os.PathLike

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

SEGMENTATION_DESCRIPTION = "medjax segmentation"


class ImageFormatError(ValueError):
    """A file that cannot be read or does not fit the others; the message is one
    line: ``"<file>: <what was wrong>"``."""


def _fail(path: PathLike, problem: str) -> ImageFormatError:
    return ImageFormatError(f"{os.fspath(path)}: {problem}")


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


# --------------------------------------------------------------------------- NIfTI


def _is_nifti(path: PathLike) -> bool:
    name = os.fspath(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def load_nifti(path: PathLike) -> Volume:
    """Reads a ``.nii`` or ``.nii.gz`` file.

    Integer data without scaling keeps its integer dtype (label maps); anything
    else (float data, or integers with ``scl_slope``/``scl_inter``) comes back as
    float32 with the scaling applied. The affine is nibabel's (sform, else qform).
    """
    import nibabel as nib

    if not os.path.exists(path):
        raise _fail(path, "no such file")
    if not _is_nifti(path):
        raise _fail(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        image = nib.load(os.fspath(path))
        # np.array copies, so no memory map keeps the file open.
        data = np.array(np.asanyarray(image.dataobj))
    except Exception as error:  # nibabel raises several types for bad files
        raise _fail(path, f"not a readable NIfTI file ({_one_line(error)})") from None
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
    (int32 if they do not fit); floats as float32.
    """
    import nibabel as nib

    if not _is_nifti(path):
        raise _fail(path, "a NIfTI file name must end in .nii or .nii.gz")
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
    nib.save(image, os.fspath(path))
    return path


# --------------------------------------------------------------------------- DICOM


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _read_dicom(path: Path, *, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        return None
    except Exception as error:
        raise _fail(path, f"unreadable DICOM file ({_one_line(error)})") from None


def _dicom_files(path: Path) -> list[tuple[Path, Any]]:
    """(file, dataset) for a single file, or for every DICOM file directly in a
    directory (other files, e.g. a README or DICOMDIR, are skipped)."""
    if path.is_dir():
        found = []
        for file in sorted(path.iterdir()):
            hidden = file.name.startswith(".") or file.name == "DICOMDIR"
            if hidden or not file.is_file():
                continue
            dataset = _read_dicom(file)
            if dataset is not None and "PixelData" in dataset:
                found.append((file, dataset))
        if not found:
            raise _fail(path, "no DICOM image files in this directory")
        return found
    if not path.exists():
        raise _fail(path, "no such file or directory")
    dataset = _read_dicom(path)
    if dataset is None:
        raise _fail(path, "not a DICOM file")
    if "PixelData" not in dataset:
        raise _fail(path, "DICOM file has no pixel data")
    return [(path, dataset)]


def _require(file: Path, dataset, keyword: str):
    value = dataset.get(keyword)
    if value is None or value == "":
        raise _fail(file, f"DICOM file lacks {keyword}")
    return value


def _slice_spacing_fallback(dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = dataset.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def load_dicom_series(
    path: PathLike,
    *,
    series_uid: str | None = None,
    gap_tolerance: float = 0.01,
) -> Volume:
    """Reads a DICOM series (a directory of single-frame slice files, or one file).

    Slices are sorted by their position along the slice normal (the cross product
    of the ImageOrientationPatient row and column cosines); RescaleSlope/Intercept
    (the modality LUT) are applied, so CT comes back in HU.

    Args:
        path: a directory holding the series' files, or one ``.dcm`` file.
        series_uid: which series to read when the directory holds several.
        gap_tolerance: the largest allowed difference, as a fraction of the median
            gap, between neighbouring slice gaps.

    Returns:
        A Volume with float32 ``array [columns, rows, slices]`` (see the module
        docstring), an RAS+ affine whose first three columns are
        ``row_cosine * PixelSpacing[1]``, ``column_cosine * PixelSpacing[0]`` and
        ``normal * slice_gap`` (each with x and y negated), and the slices'
        datasets (``datasets[k]`` is slice ``k``, pixel data dropped).

    Raises:
        ImageFormatError: not DICOM, several series and no ``series_uid``, slices
            of different orientation or size, repeated or unevenly spaced slices.
    """
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    files = _dicom_files(path)

    by_series: dict[str, list] = {}
    for file, dataset in files:
        by_series.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append(
            (file, dataset)
        )
    if series_uid is not None:
        if series_uid not in by_series:
            raise _fail(path, f"no series with SeriesInstanceUID {series_uid}")
        files = by_series[series_uid]
    elif len(by_series) > 1:
        counts = ", ".join(f"{uid} ({len(v)} files)" for uid, v in by_series.items())
        raise _fail(path, f"holds {len(by_series)} series: {counts}; pass series_uid=")

    first_file, first = files[0]
    orientation = np.asarray(
        _require(first_file, first, "ImageOrientationPatient"), np.float64
    )
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    row_spacing, column_spacing = (
        float(s) for s in _require(first_file, first, "PixelSpacing")
    )
    size = (int(first.Rows), int(first.Columns))

    positions, origins = [], []
    for file, dataset in files:
        if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
            raise _fail(file, "multi-frame DICOM is not supported (one slice per file)")
        other = np.asarray(_require(file, dataset, "ImageOrientationPatient"), float)
        if not np.allclose(other, orientation, atol=1e-4):
            raise _fail(
                file, f"ImageOrientationPatient {other.tolist()} differs from "
                f"{orientation.tolist()} of {first_file.name}"
            )
        if (int(dataset.Rows), int(dataset.Columns)) != size:
            raise _fail(
                file, f"slice size {int(dataset.Rows)}x{int(dataset.Columns)} "
                f"differs from {size[0]}x{size[1]} of {first_file.name}"
            )
        origin = np.asarray(_require(file, dataset, "ImagePositionPatient"), float)
        origins.append(origin)
        positions.append(float(origin @ normal))

    order = np.argsort(positions, kind="stable")
    files = [files[n] for n in order]
    positions = np.asarray(positions)[order]
    origins = [origins[n] for n in order]

    if len(files) > 1:
        gaps = np.diff(positions)
        typical = float(np.median(gaps))
        for n, gap in enumerate(gaps):
            if gap <= 1e-6 * max(1.0, abs(typical)):
                raise _fail(
                    path, f"slices {files[n][0].name} and {files[n + 1][0].name} "
                    f"are at the same position {positions[n]:.4g} mm (several "
                    "echoes, phases or acquisitions in one series?)"
                )
        for n, gap in enumerate(gaps):
            if abs(gap - typical) > gap_tolerance * typical:
                raise _fail(
                    path, f"slice gap of {gap:.4g} mm between {files[n][0].name} and "
                    f"{files[n + 1][0].name} differs from the series' {typical:.4g} mm"
                )
        slice_spacing = float(np.mean(gaps))
    else:
        slice_spacing = _slice_spacing_fallback(first)

    slices, datasets = [], []
    for file, dataset in files:
        try:
            pixels = dataset.pixel_array
        except Exception as error:
            problem = f"cannot decode pixel data ({_one_line(error)})"
            raise _fail(file, problem) from None
        if pixels.ndim != 2:
            raise _fail(file, f"pixel data of shape {pixels.shape} is not one "
                        "grayscale slice")
        values = np.asarray(apply_modality_lut(pixels, dataset), np.float32)
        slices.append(values.T)  # (rows, columns) -> (i = column, j = row)
        header = copy.deepcopy(dataset)
        del header.PixelData
        datasets.append(header)

    lps = np.eye(4)
    lps[:3, 0] = row_cosine * column_spacing
    lps[:3, 1] = column_cosine * row_spacing
    lps[:3, 2] = normal * slice_spacing
    lps[:3, 3] = origins[0]
    return Volume(
        array=np.stack(slices, axis=-1),
        affine=LPS_TO_RAS @ lps,
        source="dicom",
        path=os.fspath(path),
        datasets=tuple(datasets),
    )


def save_dicom_series(
    mask: np.ndarray,
    reference: Volume,
    directory: PathLike,
    *,
    series_description: str = SEGMENTATION_DESCRIPTION,
) -> list[Path]:
    """Writes a label map as a DICOM series with the reference series' geometry.

    This is a plain *label-map image series* (each slice an ordinary image whose
    pixel values are the labels), not a DICOM-SEG object: any DICOM viewer shows
    it and :func:`load_dicom_series` reads it back. Each file copies the reference
    slice's header (patient, study, ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing, Modality) and gets a new SeriesInstanceUID (shared),
    SOPInstanceUID, SeriesDescription, ImageType DERIVED\\SECONDARY, uint16 pixels
    (BitsAllocated = BitsStored = 16, unsigned), RescaleSlope 1 and Intercept 0,
    and the uncompressed Explicit VR Little Endian transfer syntax.

    Args:
        mask: ``[columns, rows, slices]`` integer labels in 0..65535, in the index
            order of ``reference.array``.
        reference: a Volume from :func:`load_dicom_series`.
        directory: a new or empty directory; files are ``slice_0000.dcm``, ...

    Returns:
        The files written, in slice order.
    """
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    directory = Path(directory)
    if reference.source != "dicom" or len(reference.datasets) != (
        reference.array.shape[2] if reference.array.ndim >= 3 else -1
    ):
        raise _fail(
            directory, "the reference has no DICOM slices with its geometry "
            "(not loaded from DICOM, or resampled since)"
        )
    mask = np.asarray(mask)
    if mask.shape != reference.spatial_shape:
        raise _fail(
            directory, f"mask shape {mask.shape} does not match the reference "
            f"series {reference.spatial_shape}"
        )
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        if not np.array_equal(mask, np.round(mask)):
            raise _fail(directory, f"mask of dtype {mask.dtype} is not integer labels")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise _fail(directory, "labels must lie in 0..65535 for uint16 pixels")
    if directory.exists() and any(directory.iterdir()):
        raise _fail(directory, "directory is not empty; refusing to mix series")
    directory.mkdir(parents=True, exist_ok=True)

    series_uid = generate_uid()
    labels = mask.astype(np.uint16)
    written = []
    for k, source in enumerate(reference.datasets):
        dataset = copy.deepcopy(source)
        for keyword in (
            "ModalityLUTSequence", "VOILUTSequence", "RescaleType",
            "SmallestImagePixelValue", "LargestImagePixelValue",
            "LossyImageCompression", "LossyImageCompressionRatio",
            "LossyImageCompressionMethod",
        ):
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        # Sets Rows, Columns, Bits*, PixelRepresentation, SamplesPerPixel and a new
        # SOPInstanceUID (also in the file meta).
        dataset.set_pixel_data(
            np.ascontiguousarray(labels[:, :, k].T), "MONOCHROME2", 16
        )
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesDescription = series_description
        dataset.SeriesNumber = int(source.get("SeriesNumber", 0) or 0) + 1000
        dataset.InstanceNumber = k + 1
        dataset.ImageType = ["DERIVED", "SECONDARY"]
        dataset.RescaleSlope = 1
        dataset.RescaleIntercept = 0
        top = int(labels.max()) if labels.size else 0
        dataset.WindowCenter = top / 2
        dataset.WindowWidth = max(top, 1)
        file = directory / f"slice_{k:04d}.dcm"
        dataset.save_as(file, enforce_file_format=True)
        written.append(file)
    return written


# --------------------------------------------------------------------------- PNG


def load_png(path: PathLike) -> Volume:
    """Reads a PNG as one grayscale 2D image ``[H, W]`` (color is converted to
    luminance; 8- and 16-bit gray keep their values and dtype) with an identity
    affine: index ``(row, column)`` -> world ``(row, column, 0)``, spacing 1."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise _fail(path, "no such file")
    try:
        with Image.open(path) as image:
            if image.mode in ("L", "I;16", "I", "F"):
                array = np.array(image)
            elif image.mode == "1":
                array = np.array(image).astype(np.uint8)
            else:
                array = np.array(image.convert("L"))
    except (UnidentifiedImageError, OSError) as error:
        raise _fail(path, f"not a readable PNG image ({_one_line(error)})") from None
    return Volume(array=array, affine=np.eye(4), source="png", path=os.fspath(path))


def _uint8_labels(mask: np.ndarray, path: PathLike) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise _fail(path, f"a PNG mask must be 2D, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise _fail(path, "PNG mask labels must lie in 0..255")
    return mask.astype(np.uint8)


def save_png_mask(mask: np.ndarray, path: PathLike) -> Path:
    """Writes a 2D label map ``[H, W]`` (values 0..255) as an 8-bit gray PNG."""
    from PIL import Image

    labels = _uint8_labels(mask, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, mode="L").save(path)
    return path


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: the pixels of each label (> 0) that touch another label or
    the background (4-neighbourhood), i.e. the inner contour of every region."""
    mask = np.asarray(mask)
    edges = np.zeros(mask.shape, bool)
    for label in np.unique(mask):
        if label == 0:
            continue
        region = mask == label
        edges |= region & ~scipy.ndimage.binary_erosion(region, border_value=0)
    return edges


PREDICTION_COLOR = (255, 255, 0)  # yellow
TRUTH_COLOR = (255, 0, 0)  # red


def save_overlay_png(
    image2d: np.ndarray,
    mask2d: np.ndarray,
    path: PathLike,
    *,
    truth: np.ndarray | None = None,
) -> Path:
    """Writes an RGB PNG ``[H, W]`` of ``image2d`` in gray (min..max stretched to
    0..255) with the contours of each predicted label in yellow and, when given,
    of each ``truth`` label in red (drawn first, so yellow wins where they meet).
    One output pixel per input pixel."""
    from PIL import Image

    image2d = np.asarray(image2d, np.float64)
    if image2d.ndim == 3 and image2d.shape[-1] == 1:
        image2d = image2d[..., 0]
    if image2d.ndim != 2:
        raise _fail(path, f"overlay image must be 2D, got shape {image2d.shape}")
    for name, other in (("mask", mask2d), ("truth", truth)):
        if other is not None and np.shape(other) != image2d.shape:
            raise _fail(
                path, f"{name} shape {np.shape(other)} does not match image "
                f"{image2d.shape}"
            )
    low, high = float(np.min(image2d)), float(np.max(image2d))
    gray = (image2d - low) / (high - low) if high > low else np.zeros_like(image2d)
    rgb = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if truth is not None:
        rgb[mask_edges(truth)] = TRUTH_COLOR
    rgb[mask_edges(mask2d)] = PREDICTION_COLOR
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path)
    return path


# --------------------------------------------------------------------------- any


def load_image(path: PathLike) -> Volume:
    """Reads ``.nii``/``.nii.gz`` (NIfTI), ``.png``, or a directory / ``.dcm`` file
    (DICOM series); other files are tried as DICOM."""
    name = os.fspath(path).lower()
    if _is_nifti(name):
        return load_nifti(path)
    if name.endswith(".png"):
        return load_png(path)
    if not os.path.exists(path):
        raise _fail(path, "no such file or directory")
    if os.path.isdir(path) or name.endswith(".dcm"):
        return load_dicom_series(path)
    if _read_dicom(Path(path), stop_before_pixels=True) is not None:
        return load_dicom_series(path)
    raise _fail(
        path, "unknown image format (expected .nii, .nii.gz, .png, .dcm or a "
        "DICOM directory)"
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
        raise _fail(
            path, f"mask shape {mask.shape} does not match image "
            f"{reference.spatial_shape}"
        )
    name = os.fspath(path).lower()
    if _is_nifti(name):
        like = reference if reference.source == "nifti" else None
        return save_nifti(mask, path, affine=reference.affine, like=like)
    if name.endswith(".png"):
        return save_png_mask(mask, path)
    if reference.source == "dicom":
        save_dicom_series(mask, reference, path)
        return Path(path)
    raise _fail(
        path, f"cannot write a {reference.source} reference's mask here (use "
        ".nii.gz or .png)"
    )


# --------------------------------------------------------------------------- intensity


def ct_window(hu: np.ndarray, center: float = 40.0, width: float = 400.0) -> np.ndarray:
    """float32 in [-1, 1]: ``hu`` clipped to ``[center - width/2, center + width/2]``
    and rescaled linearly (the same as ``medjax.data.pipeline.CTWindow``)."""
    if width <= 0:
        raise ValueError(f"CT window width must be positive, got {width}")
    low = np.float32(center - width / 2)
    scaled = (np.asarray(hu).astype(np.float32) - low) / np.float32(width)
    return np.clip(scaled, 0.0, 1.0) * np.float32(2.0) - np.float32(1.0)


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float32 ``(image - mean) / max(std, 1e-8)``, with the mean and standard
    deviation taken over the voxels where ``mask`` is true (all when None)."""
    image = np.asarray(image, np.float32)
    values = image if mask is None else image[np.asarray(mask, bool)]
    if values.size == 0:
        raise ValueError("zscore: the mask selects no voxels")
    mean = values.mean(dtype=np.float64)
    std = max(float(values.std(dtype=np.float64)), 1e-8)
    return ((image - mean) / std).astype(np.float32)


# --------------------------------------------------------------------------- resampling


def resample_to_spacing(
    volume: Volume, spacing: float | Sequence[float], *, order: int | None = None
) -> Volume:
    """Resamples to a new voxel size, keeping the axes' directions.

    Voxel centres are aligned at index 0 (as ``nibabel.processing`` and SimpleITK
    do): new voxel ``n`` sits at old index ``n * new_spacing / old_spacing``, so the
    world coordinate of voxel 0 is unchanged and the new affine is the old one with
    each spatial column scaled by ``new_spacing / old_spacing``. The output shape is
    ``round(old_shape * old_spacing / new_spacing)`` (at least 1); samples past the
    last old voxel repeat the edge.

    Args:
        volume: the Volume; axes after the spatial ones (channels) are kept.
        spacing: the new voxel size in mm, one number or one per spatial axis.
        order: spline order; default 0 (nearest, label values kept) for integer
            and bool arrays, 1 (linear, float32 out) otherwise.

    Returns:
        A Volume of source ``"array"`` (without DICOM datasets, whose geometry no
        longer applies), integer arrays keeping their dtype.
    """
    ndim = volume.spatial_ndim
    new = np.broadcast_to(np.asarray(spacing, np.float64), (ndim,))
    if np.any(new <= 0):
        raise ValueError(f"spacing must be positive, got {tuple(new)}")
    old = np.asarray(volume.spacing)
    array = volume.array
    is_label = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer)
    if order is None:
        order = 0 if is_label else 1
    shape = tuple(
        max(1, int(round(n * s))) for n, s in zip(volume.spatial_shape, old / new)
    )
    zoom = new / old
    out_dtype = array.dtype if (is_label and order == 0) else np.float32
    work = array.astype(np.float32) if not (is_label and order == 0) else array
    if work.dtype == np.bool_:
        work = work.astype(np.uint8)

    channels = work.reshape(volume.spatial_shape + (-1,))
    resampled = np.stack(
        [
            scipy.ndimage.affine_transform(
                channels[..., c], zoom, offset=0.0, output_shape=shape,
                order=order, mode="nearest",
            )
            for c in range(channels.shape[-1])
        ],
        axis=-1,
    ).reshape(shape + array.shape[ndim:])

    affine = np.array(volume.affine, np.float64)
    affine[:3, :ndim] = affine[:3, :ndim] * zoom
    return dataclasses.replace(
        volume, array=resampled.astype(out_dtype), affine=affine, source="array",
        datasets=(),
    )


def center_crop_or_pad(
    array: np.ndarray, shape: Sequence[int], *, pad_value: float = 0
) -> np.ndarray:
    """Crops or pads the leading ``len(shape)`` axes of ``array`` to ``shape``
    around the centre (an odd difference puts the extra voxel at the end); later
    axes are kept."""
    shape = tuple(int(s) for s in shape)
    slices, padding = [], []
    for size, target in zip(array.shape, shape):
        if size >= target:
            start = (size - target) // 2
            slices.append(slice(start, start + target))
            padding.append((0, 0))
        else:
            slices.append(slice(None))
            before = (target - size) // 2
            padding.append((before, target - size - before))
    array = array[tuple(slices)]
    padding += [(0, 0)] * (array.ndim - len(shape))
    return np.pad(array, padding, constant_values=pad_value)


# --------------------------------------------------------------------------- Decathlon


def _case_path(root: Path, entry: str) -> Path:
    return root / Path(entry.removeprefix("./"))


class DecathlonSource:
    """One split of a Medical Segmentation Decathlon folder, as a random-access
    source for grain.

    The folder holds ``dataset.json`` (with ``training``: a list of
    ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``,
    ``labels``: ``{"0": "background", ...}`` and ``modality``: ``{"0": "CT"}``),
    ``imagesTr/`` and ``labelsTr/``. The training list is split into ``train`` and
    ``validation`` by a permutation seeded with ``seed``; ``validation`` gets
    ``round(n * validation_fraction)`` cases (at least one when the fraction is
    positive and n > 1); ``"all"`` is the whole list. Cases keep the list's order
    within a split.

    Each example is resampled to ``target_spacing`` (if given), normalised, then
    centre-cropped or padded to ``shape`` (image with its minimum, mask with 0),
    so every example has the same static shape:

    * ``image``: float32 ``[*shape, C]`` (C = 1, or the modalities of a 4D image),
    * ``mask``: int32 ``shape``,
    * ``spacing``: float32 ``[ndim]``, the voxel size after resampling.

    Normalisation: ``"ct"`` (``ct_window`` with ``window=(center, width)``),
    ``"zscore"`` (per channel, over the whole image) or ``"none"``; the default
    picks ``"ct"`` when the modality is CT, else ``"zscore"``.

    Missing ``dataset.json``, a listed file that does not exist, or an image whose
    shape differs from its label's raise :class:`ImageFormatError` naming the file
    when the source is made (shapes are read from the headers only).
    """

    def __init__(
        self,
        root: PathLike,
        *,
        shape: Sequence[int],
        split: str = "train",
        validation_fraction: float = 0.2,
        seed: int = 0,
        target_spacing: float | Sequence[float] | None = None,
        normalization: str | None = None,
        window: tuple[float, float] = (40.0, 400.0),
    ):
        self.root = Path(root)
        description = self.root / "dataset.json"
        if not description.is_file():
            raise _fail(
                description, "missing (a Decathlon folder has dataset.json, "
                "imagesTr/ and labelsTr/)"
            )
        try:
            meta = json.loads(description.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _fail(description, f"not valid JSON ({_one_line(error)})") from None
        training = meta.get("training")
        if not isinstance(training, list) or not training:
            raise _fail(description, "has no 'training' list of image/label pairs")
        cases = []
        for number, entry in enumerate(training):
            if not isinstance(entry, Mapping) or not {"image", "label"} <= entry.keys():
                raise _fail(description, f"training[{number}] lacks 'image'/'label'")
            image = _case_path(self.root, entry["image"])
            cases.append((image, _case_path(self.root, entry["label"])))
        self.labels = {int(k): str(v) for k, v in dict(meta.get("labels", {})).items()}
        self.modality = {
            int(k): str(v) for k, v in dict(meta.get("modality", {})).items()
        }
        self.name = str(meta.get("name", self.root.name))

        if split not in ("train", "validation", "all"):
            raise ValueError(f"split must be train, validation or all, got {split!r}")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {validation_fraction}"
            )
        count = len(cases)
        num_validation = int(round(count * validation_fraction))
        if validation_fraction > 0 and count > 1:
            num_validation = min(max(num_validation, 1), count - 1)
        permutation = np.random.default_rng(seed).permutation(count)
        chosen = {
            "validation": permutation[:num_validation],
            "train": permutation[num_validation:],
            "all": permutation,
        }[split]
        self.cases = [cases[n] for n in sorted(chosen)]

        self.shape = tuple(int(s) for s in shape)
        self.target_spacing = target_spacing
        if normalization is None:
            is_ct = any(v.upper() == "CT" for v in self.modality.values())
            normalization = "ct" if is_ct else "zscore"
        if normalization not in ("ct", "zscore", "none"):
            raise ValueError(
                f"normalization must be ct, zscore or none, got {normalization!r}"
            )
        self.normalization = normalization
        self.window = tuple(float(w) for w in window)
        self._check_cases()

    def _check_cases(self) -> None:
        import nibabel as nib

        for image_path, label_path in self.cases:
            for file in (image_path, label_path):
                if not file.is_file():
                    raise _fail(file, "listed in dataset.json but missing")
            image_shape = nib.load(image_path).shape
            label_shape = nib.load(label_path).shape
            if tuple(image_shape[: len(label_shape)]) != tuple(label_shape):
                raise _fail(
                    label_path, f"shape {tuple(label_shape)} does not match image "
                    f"{tuple(image_shape)}"
                )
            if len(label_shape) != len(self.shape):
                raise _fail(
                    label_path, f"has {len(label_shape)} spatial axes but shape= "
                    f"has {len(self.shape)}"
                )

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return (
            f"DecathlonSource({os.fspath(self.root)!r}, {len(self)} cases, "
            f"shape={self.shape})"
        )

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        if self.normalization == "ct":
            return ct_window(image, *self.window)
        if self.normalization == "zscore":
            return np.stack(
                [zscore(image[..., c]) for c in range(image.shape[-1])], axis=-1
            )
        return image.astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        image_path, label_path = self.cases[index]
        image = load_nifti(image_path)
        label = load_nifti(label_path)
        ndim = label.array.ndim
        if image.array.shape[:ndim] != label.array.shape:
            raise _fail(
                label_path, f"shape {label.array.shape} does not match image "
                f"{image.array.shape}"
            )
        labels = np.asarray(label.array)
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels).astype(np.int32)
        # The label takes the image's geometry: some released labels' headers differ
        # from their image's by rounding, which must not change the resampled shape.
        label = Volume(labels, image.affine)
        if self.target_spacing is not None:
            image = resample_to_spacing(image, self.target_spacing, order=1)
            label = resample_to_spacing(label, self.target_spacing, order=0)
        pixels = image.array.astype(np.float32)
        if pixels.ndim == ndim:
            pixels = pixels[..., None]
        pixels = self._normalize(pixels)
        pad = pixels.reshape(-1, pixels.shape[-1]).min(axis=0)
        cropped = np.stack(
            [
                center_crop_or_pad(pixels[..., c], self.shape, pad_value=pad[c])
                for c in range(pixels.shape[-1])
            ],
            axis=-1,
        )
        return {
            "image": cropped.astype(np.float32),
            "mask": center_crop_or_pad(label.array, self.shape).astype(np.int32),
            "spacing": np.asarray(image.spacing, np.float32),
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self[int(i)] for i in indices]


def decathlon_sources(
    root: PathLike, *, splits: Sequence[str] = ("train", "validation"), **kwargs
) -> dict[str, DecathlonSource]:
    """``{split: DecathlonSource(root, split=split, **kwargs)}``; the splits share
    the seed, so they are disjoint and together cover the training list."""
    return {split: DecathlonSource(root, split=split, **kwargs) for split in splits}
