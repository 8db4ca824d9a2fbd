"""DICOM series in and out (``medjax.data.io.dicom``) on pydicom's CT sample."""

import copy

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale
from pydicom.uid import generate_uid

from medjax.data import io, preprocess

CT_SMALL = get_testdata_file("CT_small.dcm")


def test_ct_small_reads_to_pydicoms_hu():
    dataset = pydicom.dcmread(CT_SMALL)
    expected = apply_rescale(dataset.pixel_array, dataset)
    volume = io.load_dicom_series(CT_SMALL)
    assert volume.array.shape == (128, 128, 1)
    assert volume.array.dtype == np.float32
    # Index order (column i, row j, slice k): the slice is pixel_array transposed.
    np.testing.assert_array_equal(volume.array[:, :, 0], expected.T)
    assert volume.array.min() == -896 and volume.array.max() == 1167
    spacing = float(dataset.PixelSpacing[0])
    # The third spacing of a single slice is its SliceThickness.
    np.testing.assert_allclose(volume.spacing, (spacing, spacing, 5.0))
    # LPS (-158.1, -179.0, -75.7) becomes RAS (158.1, 179.0, -75.7).
    np.testing.assert_allclose(
        volume.world((0, 0, 0)), [158.135803, 179.035797, -75.699997]
    )
    assert volume.source == "dicom" and len(volume.datasets) == 1
    assert "PixelData" not in volume.datasets[0]


def write_series(
    directory,
    positions,
    *,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin=(-100.0, -120.0, 30.0),
    slope=2,
    intercept=-1024,
    series_uid=None,
    name_order=None,
):
    """Writes one CT_small-based slice per position (mm along the normal) and
    returns the raw pixel arrays, in the order of ``positions``. File names are
    permuted by ``name_order`` so their sorted order is not the slice order."""
    base = pydicom.dcmread(CT_SMALL)
    raw = base.pixel_array
    orientation = np.asarray(orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    series_uid = series_uid or generate_uid()
    name_order = name_order or list(range(len(positions)))
    directory.mkdir(parents=True, exist_ok=True)
    pixels = []
    for n, position in enumerate(positions):
        dataset = copy.deepcopy(base)
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.ImageOrientationPatient = [float(v) for v in orientation]
        dataset.ImagePositionPatient = [
            round(float(v), 4) for v in np.asarray(origin) + position * normal
        ]
        dataset.RescaleSlope = slope
        dataset.RescaleIntercept = intercept
        slice_pixels = (raw // 4 + 100 * n).astype(np.int16)
        dataset.PixelData = slice_pixels.tobytes()
        dataset.save_as(directory / f"img{name_order[n]:03d}.dcm")
        pixels.append(slice_pixels)
    return pixels


def test_dicom_series_is_sorted_by_position_with_spacing_and_hu(tmp_path):
    positions = [5.0, -2.5, 0.0, 7.5, 2.5]
    raw = write_series(tmp_path / "ct", positions, name_order=[3, 0, 4, 1, 2])
    volume = io.load_dicom_series(tmp_path / "ct")
    assert volume.array.shape == (128, 128, 5)
    order = np.argsort(positions)  # slices -2.5, 0, 2.5, 5, 7.5
    for k, n in enumerate(order):
        np.testing.assert_array_equal(volume.array[:, :, k], (2.0 * raw[n] - 1024).T)
    np.testing.assert_allclose(volume.spacing, (0.661468, 0.661468, 2.5), rtol=1e-6)
    assert [float(d.ImagePositionPatient[2]) for d in volume.datasets] == [
        27.5,
        30.0,
        32.5,
        35.0,
        37.5,
    ]
    # load_image dispatches a directory to the DICOM reader.
    np.testing.assert_array_equal(io.load_image(tmp_path / "ct").array, volume.array)


@pytest.mark.parametrize(
    "orientation",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # axial
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # sagittal, normal -x
        (0.6, 0.8, 0.0, 0.0, 0.0, -1.0),  # oblique, normal (-0.8, 0.6, 0)
    ],
)
def test_dicom_affine_maps_voxels_to_patient_positions(tmp_path, orientation):
    positions = [3.0, 0.0, 6.0, 9.0]
    write_series(tmp_path / "s", positions, orientation=orientation)
    volume = io.load_dicom_series(tmp_path / "s")
    datasets = volume.datasets
    row_cosine, column_cosine = np.array(orientation[:3]), np.array(orientation[3:])
    row_spacing, column_spacing = (float(s) for s in datasets[0].PixelSpacing)
    for i, j, k in [(0, 0, 0), (5, 0, 0), (0, 7, 1), (127, 3, 2), (17, 101, 3)]:
        lps = (
            np.asarray(datasets[k].ImagePositionPatient, float)
            + i * column_spacing * row_cosine
            + j * row_spacing * column_cosine
        )
        ras = lps * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(volume.world((i, j, k)), ras, atol=1e-3)
    np.testing.assert_allclose(volume.spacing[2], 3.0, rtol=1e-5)


def test_dicom_uneven_gap_is_one_line_naming_the_gap(tmp_path):
    write_series(tmp_path / "gap", [0.0, 2.5, 5.0, 10.0])
    with pytest.raises(io.ImageFormatError) as error:
        io.load_dicom_series(tmp_path / "gap")
    message = str(error.value)
    assert "\n" not in message
    assert "gap: slice gap of 5 mm between img002.dcm and img003.dcm" in message
    assert "2.5 mm" in message


def test_dicom_repeated_position_and_mixed_series_are_rejected(tmp_path):
    write_series(tmp_path / "dup", [0.0, 2.5, 2.5])
    with pytest.raises(io.ImageFormatError, match="are at the same position"):
        io.load_dicom_series(tmp_path / "dup")

    first, second = generate_uid(), generate_uid()
    write_series(tmp_path / "mixed", [0.0, 2.5], series_uid=first)
    write_series(tmp_path / "mixed", [5.0], series_uid=second, name_order=[7])
    with pytest.raises(io.ImageFormatError, match="holds 2 series"):
        io.load_dicom_series(tmp_path / "mixed")
    picked = io.load_dicom_series(tmp_path / "mixed", series_uid=first)
    assert picked.array.shape == (128, 128, 2)


def test_non_dicom_file_gives_one_line(tmp_path):
    scan = tmp_path / "scan.dcm"
    scan.write_text("this is not DICOM\n" * 20)
    with pytest.raises(io.ImageFormatError) as error:
        io.load_image(scan)
    assert str(error.value) == f"{scan}: not a DICOM file"
    with pytest.raises(io.ImageFormatError, match="no DICOM image files"):
        io.load_dicom_series(tmp_path)  # only the text file is there
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(io.ImageFormatError, match="notes.txt: unknown image format"):
        io.load_image(odd)


def test_save_dicom_series_round_trip(tmp_path):
    write_series(tmp_path / "ct", [0.0, 2.0, 4.0], orientation=(0.6, 0.8, 0, 0, 0, -1))
    reference = io.load_dicom_series(tmp_path / "ct")
    mask = np.zeros(reference.array.shape, np.int64)
    mask[reference.array > 0] = 1
    mask[reference.array > 1000] = 2
    mask[10:20, 30:35, 1] = 300
    written = io.save_dicom_series(mask, reference, tmp_path / "seg")
    assert len(written) == 3

    loaded = io.load_dicom_series(tmp_path / "seg")
    np.testing.assert_array_equal(loaded.array, mask)
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-6)

    datasets = [pydicom.dcmread(f) for f in written]
    assert len({d.SeriesInstanceUID for d in datasets}) == 1
    assert datasets[0].SeriesInstanceUID != reference.datasets[0].SeriesInstanceUID
    uids = {d.SOPInstanceUID for d in datasets}
    assert len(uids) == 3 and not uids & {d.SOPInstanceUID for d in reference.datasets}
    for dataset, source in zip(datasets, reference.datasets):
        assert dataset.SeriesDescription == "medjax segmentation"
        assert dataset.Modality == source.Modality
        assert dataset.BitsAllocated == dataset.BitsStored == 16
        assert dataset.PixelRepresentation == 0
        assert dataset.pixel_array.dtype == np.uint16
        assert (float(dataset.RescaleSlope), float(dataset.RescaleIntercept)) == (1, 0)
        assert dataset.ImagePositionPatient == source.ImagePositionPatient
        assert dataset.ImageOrientationPatient == source.ImageOrientationPatient
        assert dataset.PixelSpacing == source.PixelSpacing
        assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID

    # save_like picks the DICOM writer for a DICOM reference and a directory path.
    io.save_like(mask, reference, tmp_path / "seg2")
    np.testing.assert_array_equal(io.load_image(tmp_path / "seg2").array, mask)
    # Writing again replaces a mask series written here before, but never a
    # directory holding anything else (it may be the input series).
    io.save_dicom_series(mask[::-1], reference, tmp_path / "seg")
    np.testing.assert_array_equal(io.load_dicom_series(tmp_path / "seg").array, mask[::-1])
    with pytest.raises(io.ImageFormatError, match="ct: directory is not empty and not a medjax"):
        io.save_dicom_series(mask, reference, tmp_path / "ct")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg", "seg2"]
    with pytest.raises(io.ImageFormatError, match="no DICOM slices"):
        resampled = preprocess.resample_to_spacing(reference, 1.0)
        io.save_dicom_series(mask, resampled, tmp_path / "x")


# --------------------------------------------------------------------------- PNG


IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-9876543",
    "PatientBirthDate": "19700101",
    "OtherPatientIDs": "ALT-5550123",
    "AccessionNumber": "ACC-314159",
    "InstitutionName": "Saint Elsewhere Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "StudyDate": "20240229",
}


def test_a_mask_series_keeps_only_the_study_uids_and_geometry(tmp_path):
    write_series(tmp_path / "ct", [0.0, 2.5], orientation=(0, 1, 0, 0, 0, -1))
    for file in (tmp_path / "ct").iterdir():  # plant identifiers in the source
        dataset = pydicom.dcmread(file)
        for keyword, value in IDENTIFIERS.items():
            setattr(dataset, keyword, value)
        dataset.FrameOfReferenceUID = "1.2.3.4.5"
        dataset.save_as(file)
    reference = io.load_dicom_series(tmp_path / "ct")
    written = io.save_dicom_series(
        np.ones(reference.spatial_shape, np.uint8), reference, tmp_path / "seg"
    )
    for file, source in zip(written, reference.datasets):
        raw = file.read_bytes()
        for value in IDENTIFIERS.values():
            assert value.encode() not in raw, value
        dataset = pydicom.dcmread(file)
        kept = {e.keyword for e in dataset} - {"PixelData"}
        assert kept == set(io.dicom.KEPT_TAGS) | {  # CT_small has every kept tag
            "PatientName", "PatientID", "PatientIdentityRemoved", "DeidentificationMethod",
            "SourceImageSequence", "ReferencedSeriesSequence", "DerivationDescription",
            "SOPInstanceUID", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber",
            "InstanceNumber", "ImageType", "RescaleSlope", "RescaleIntercept",
            "WindowCenter", "WindowWidth", "Rows", "Columns", "BitsAllocated",
            "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
            "PhotometricInterpretation",
        }
        assert (dataset.PatientName, dataset.PatientID) == ("", "")
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert dataset.FrameOfReferenceUID == "1.2.3.4.5"
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def test_a_failed_series_write_keeps_the_previous_series(tmp_path, monkeypatch):
    import errno

    from medjax.errors import WriteError

    write_series(tmp_path / "ct", [0.0, 2.0, 4.0])
    reference = io.load_dicom_series(tmp_path / "ct")
    mask = np.zeros(reference.spatial_shape, np.uint8)
    mask[5:9, 7:20] = 3
    io.save_dicom_series(mask, reference, tmp_path / "seg")
    before = {p.name: p.read_bytes() for p in (tmp_path / "seg").iterdir()}
    save_as = pydicom.Dataset.save_as
    calls = []

    def full_disk_on_the_third_slice(self, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_as(self, filename, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "save_as", full_disk_on_the_third_slice)
    with pytest.raises(WriteError, match=r"seg: could not write it \(No space left on device\); the previous content is intact"):
        io.save_dicom_series(mask + 1, reference, tmp_path / "seg")
    assert len(calls) == 3
    assert {p.name: p.read_bytes() for p in (tmp_path / "seg").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg"]  # no temporary left
