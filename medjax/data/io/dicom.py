"""DICOM series in and out through pydicom.

A series (a directory of single-frame slice files) becomes one Volume indexed
``(column i, row j, slice k)`` with an RAS+ affine (DICOM's LPS+ patient
coordinates with x and y negated), so it agrees with its NIfTI conversion; see
``medjax.data.io.volume`` for the conventions every loader shares. Masks are
written back as a label-map image series with the reference's geometry.
"""

from __future__ import annotations

import copy
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from medjax.data.io.volume import PathLike, Volume, format_error, one_line
from medjax.files import atomic_directory

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

SEGMENTATION_DESCRIPTION = "medjax segmentation"


def read_dicom(path: Path, *, stop_before_pixels: bool = False):
    """The dataset in ``path``; None when it is not DICOM at all.

    Raises:
        ImageFormatError: a DICOM file pydicom fails to parse (truncated or
            damaged).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        return None
    except (OSError, EOFError, struct.error, ValueError, KeyError) as error:
        # What pydicom's parser raises for a file cut short or with damaged
        # element headers.
        raise format_error(path, f"unreadable DICOM file ({one_line(error)})") from None


def is_dicom_file(path: PathLike) -> bool:
    """Whether ``path`` parses as DICOM (its pixel data is not read).

    Raises:
        ImageFormatError: a DICOM file pydicom fails to parse.
    """
    return read_dicom(Path(path), stop_before_pixels=True) is not None


def _dicom_files(path: Path) -> list[tuple[Path, Any]]:
    """(file, dataset) for a single file, or for every DICOM file directly in a
    directory (other files, e.g. a README or DICOMDIR, are skipped)."""
    if path.is_dir():
        found = []
        for file in sorted(path.iterdir()):
            hidden = file.name.startswith(".") or file.name == "DICOMDIR"
            if hidden or not file.is_file():
                continue
            dataset = read_dicom(file)
            if dataset is not None and "PixelData" in dataset:
                found.append((file, dataset))
        if not found:
            raise format_error(path, "no DICOM image files in this directory")
        return found
    if not path.exists():
        raise format_error(path, "no such file or directory")
    dataset = read_dicom(path)
    if dataset is None:
        raise format_error(path, "not a DICOM file")
    if "PixelData" not in dataset:
        raise format_error(path, "DICOM file has no pixel data")
    return [(path, dataset)]


def _require(file: Path, dataset, keyword: str):
    value = dataset.get(keyword)
    if value is None or value == "":
        raise format_error(file, f"DICOM file lacks {keyword}")
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
            raise format_error(path, f"no series with SeriesInstanceUID {series_uid}")
        files = by_series[series_uid]
    elif len(by_series) > 1:
        counts = ", ".join(f"{uid} ({len(v)} files)" for uid, v in by_series.items())
        raise format_error(
            path, f"holds {len(by_series)} series: {counts}; pass series_uid="
        )

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
            raise format_error(
                file, "multi-frame DICOM is not supported (one slice per file)"
            )
        other = np.asarray(_require(file, dataset, "ImageOrientationPatient"), float)
        if not np.allclose(other, orientation, atol=1e-4):
            raise format_error(
                file,
                f"ImageOrientationPatient {other.tolist()} differs from "
                f"{orientation.tolist()} of {first_file.name}",
            )
        if (int(dataset.Rows), int(dataset.Columns)) != size:
            raise format_error(
                file,
                f"slice size {int(dataset.Rows)}x{int(dataset.Columns)} "
                f"differs from {size[0]}x{size[1]} of {first_file.name}",
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
                raise format_error(
                    path,
                    f"slices {files[n][0].name} and {files[n + 1][0].name} "
                    f"are at the same position {positions[n]:.4g} mm (several "
                    "echoes, phases or acquisitions in one series?)",
                )
        for n, gap in enumerate(gaps):
            if abs(gap - typical) > gap_tolerance * typical:
                raise format_error(
                    path,
                    f"slice gap of {gap:.4g} mm between {files[n][0].name} and "
                    f"{files[n + 1][0].name} differs from the series' {typical:.4g} mm",
                )
        slice_spacing = float(np.mean(gaps))
    else:
        slice_spacing = _slice_spacing_fallback(first)

    slices, datasets = [], []
    for file, dataset in files:
        try:
            pixels = dataset.pixel_array
        except (ValueError, AttributeError, RuntimeError, struct.error) as error:
            # pydicom's pixel decoders: too few bytes (truncated), a missing
            # required element (AttributeError "Missing required element"), a
            # compressed transfer syntax with no handler installed
            # (NotImplementedError/RuntimeError).
            problem = f"cannot decode pixel data ({one_line(error)})"
            raise format_error(file, problem) from None
        if pixels.ndim != 2:
            raise format_error(
                file, f"pixel data of shape {pixels.shape} is not one grayscale slice"
            )
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


#: What a mask series copies from its reference slices: enough to file it with
#: the source study (Study and Frame of Reference UIDs) and to lay it on the same
#: voxels (geometry). Nothing that names the patient, the institution, the staff
#: or the dates is copied.
KEPT_TAGS = (
    "SOPClassUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "PatientPosition",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

_SLICE_NAME = re.compile(r"slice_\d{4}\.dcm")


def _mask_slice(source, labels_slice: np.ndarray, series_uid: str, k: int,
                series_description: str):
    """One mask slice's dataset: ``KEPT_TAGS`` of ``source``, a reference to it
    (SourceImageSequence, ReferencedSeriesSequence), new series and instance
    UIDs and the labels as uint16 pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = Dataset()
    for keyword in KEPT_TAGS:
        if keyword in source:
            setattr(dataset, keyword, copy.deepcopy(source[keyword].value))
    # Patient Name and ID are type 2 (present, may be empty) in image IODs.
    dataset.PatientName = ""
    dataset.PatientID = ""
    dataset.PatientIdentityRemoved = "YES"
    dataset.DeidentificationMethod = "medjax: only UIDs and geometry kept"
    if "SOPClassUID" not in dataset:  # a loose file: file it as Secondary Capture
        dataset.SOPClassUID = SECONDARY_CAPTURE
    if source.get("SOPInstanceUID"):
        referenced = Dataset()
        referenced.ReferencedSOPClassUID = dataset.SOPClassUID
        referenced.ReferencedSOPInstanceUID = source.SOPInstanceUID
        dataset.SourceImageSequence = [referenced]
    if source.get("SeriesInstanceUID"):
        referenced_series = Dataset()
        referenced_series.SeriesInstanceUID = source.SeriesInstanceUID
        dataset.ReferencedSeriesSequence = [referenced_series]
    dataset.DerivationDescription = series_description
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # Sets Rows, Columns, Bits*, PixelRepresentation, SamplesPerPixel and a new
    # SOPInstanceUID (also in the file meta).
    dataset.set_pixel_data(np.ascontiguousarray(labels_slice.T), "MONOCHROME2", 16)
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesDescription = series_description
    dataset.SeriesNumber = int(source.get("SeriesNumber", 0) or 0) + 1000
    dataset.InstanceNumber = k + 1
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    dataset.RescaleSlope = 1
    dataset.RescaleIntercept = 0
    top = int(labels_slice.max()) if labels_slice.size else 0
    dataset.WindowCenter = top / 2
    dataset.WindowWidth = max(top, 1)
    return dataset


def _check_replaceable(directory: Path) -> None:
    """Refuses a ``directory`` that holds anything but a mask series written
    here before (``slice_NNNN.dcm`` files): it may be the input, or a user's."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise format_error(directory, "exists and is not a directory")
    others = [p.name for p in directory.iterdir() if not _SLICE_NAME.fullmatch(p.name)]
    if others:
        raise format_error(
            directory,
            f"directory is not empty and not a medjax mask series ({others[0]}); "
            "refusing to replace it",
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
    it and :func:`load_dicom_series` reads it back. Each file keeps only
    ``KEPT_TAGS`` of its reference slice (SOP class, Study and Frame of Reference
    UIDs, Modality, PatientPosition and the geometry: ImagePositionPatient,
    ImageOrientationPatient, PixelSpacing, SliceThickness, SpacingBetweenSlices,
    SliceLocation), references it (SourceImageSequence: its SOP class and
    instance UIDs; ReferencedSeriesSequence: its SeriesInstanceUID), has empty
    PatientName and PatientID with PatientIdentityRemoved YES, and gets a new
    SeriesInstanceUID (shared), SOPInstanceUID, SeriesDescription, SeriesNumber
    (+1000), InstanceNumber, ImageType DERIVED\\SECONDARY, uint16 pixels
    (BitsAllocated = BitsStored = 16, unsigned), RescaleSlope 1 and Intercept 0,
    and the uncompressed Explicit VR Little Endian transfer syntax. No patient
    name, ID, birth date, institution, staff or date is written.

    The series is written into a temporary directory beside ``directory`` and
    renamed into place once complete, so a failed write leaves a previous
    series there intact.

    Args:
        mask: ``[columns, rows, slices]`` integer labels in 0..65535, in the index
            order of ``reference.array``.
        reference: a Volume from :func:`load_dicom_series`.
        directory: a new or empty directory, or one holding a mask series written
            here before (it is replaced); files are ``slice_0000.dcm``, ...

    Returns:
        The files written, in slice order.

    Raises:
        ImageFormatError: the reference or mask does not fit, or ``directory``
            holds other files.
        WriteError: the series could not be written (full disk, no permission).
    """
    from pydicom.uid import generate_uid

    directory = Path(directory)
    if reference.source != "dicom" or len(reference.datasets) != (
        reference.array.shape[2] if reference.array.ndim >= 3 else -1
    ):
        raise format_error(
            directory,
            "the reference has no DICOM slices with its geometry "
            "(not loaded from DICOM, or resampled since)",
        )
    mask = np.asarray(mask)
    if mask.shape != reference.spatial_shape:
        raise format_error(
            directory,
            f"mask shape {mask.shape} does not match the reference "
            f"series {reference.spatial_shape}",
        )
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        if not np.array_equal(mask, np.round(mask)):
            raise format_error(
                directory, f"mask of dtype {mask.dtype} is not integer labels"
            )
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise format_error(directory, "labels must lie in 0..65535 for uint16 pixels")
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)

    series_uid = generate_uid()
    labels = mask.astype(np.uint16)
    names = [f"slice_{k:04d}.dcm" for k in range(len(reference.datasets))]
    with atomic_directory(directory) as temporary:
        for k, source in enumerate(reference.datasets):
            dataset = _mask_slice(
                source, labels[:, :, k], series_uid, k, series_description
            )
            dataset.save_as(Path(temporary) / names[k], enforce_file_format=True)
    return [directory / name for name in names]
