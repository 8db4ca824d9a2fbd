import copy
import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale
from pydicom.uid import generate_uid

from medjax.data import io

ANATOMICAL = os.path.join(
    os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii"
)
CT_SMALL = get_testdata_file("CT_small.dcm")


def oblique_affine(spacing=(2.0, 3.0, 4.0), origin=(-10.0, 20.0, 5.0)):
    rotation = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_float_data_and_affine(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 6, 5)).astype(np.float32)
    affine = oblique_affine()
    path = io.save_nifti(data, tmp_path / f"image{suffix}", affine=affine)
    volume = io.load_nifti(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, data)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    np.testing.assert_allclose(volume.spacing, (2.0, 3.0, 4.0), rtol=1e-6)
    assert volume.source == "nifti"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_integer_masks_stay_integer_in_small_dtypes(tmp_path, suffix):
    mask = np.zeros((7, 6, 5), np.int64)
    mask[2:5, 1:4, 1:3] = 2
    mask[0, 0, 0] = 1
    path = io.save_nifti(mask, tmp_path / f"mask{suffix}", affine=oblique_affine())
    assert nib.load(path).get_data_dtype() == np.uint8
    loaded = io.load_nifti(path)
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, mask)

    wide = mask * 300 - 5  # -5..595: needs int16
    path = io.save_nifti(wide, tmp_path / f"wide{suffix}")
    assert nib.load(path).get_data_dtype() == np.int16
    np.testing.assert_array_equal(io.load_nifti(path).array, wide)
    np.testing.assert_array_equal(io.load_nifti(path).affine, np.eye(4))


def test_nifti_save_copies_the_reference_codes(tmp_path):
    reference = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), oblique_affine())
    reference.set_sform(oblique_affine(), code=4)  # MNI
    reference.set_qform(oblique_affine(), code=2)  # aligned
    nib.save(reference, tmp_path / "ref.nii.gz")
    like = io.load_nifti(tmp_path / "ref.nii.gz")
    mask = np.ones((4, 5, 6), bool)
    path = io.save_nifti(mask, tmp_path / "mask.nii.gz", like=like)
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 2)
    assert header.get_data_dtype() == np.uint8
    np.testing.assert_allclose(nib.load(path).affine, oblique_affine(), atol=1e-5)


def test_nibabel_anatomical_round_trip(tmp_path):
    volume = io.load_nifti(ANATOMICAL)
    reference = nib.load(ANATOMICAL)
    assert volume.array.shape == (33, 41, 25)
    assert np.issubdtype(volume.array.dtype, np.integer)  # int16 on disk, no scaling
    assert volume.array.dtype.isnative
    np.testing.assert_array_equal(volume.array, np.asanyarray(reference.dataobj))
    np.testing.assert_array_equal(volume.affine, reference.affine)
    assert volume.spacing == (2.0, 2.0, 2.0)

    path = io.save_nifti(volume, tmp_path / "copy.nii.gz")
    again = io.load_nifti(path)
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-6)

    mask = (volume.array > np.median(volume.array)).astype(np.int32)
    path = io.save_like(mask, volume, tmp_path / "mask.nii.gz")
    saved = nib.load(path)
    assert saved.get_data_dtype() == np.uint8
    assert int(saved.header["sform_code"]) == int(reference.header["sform_code"])
    assert int(saved.header["qform_code"]) == int(reference.header["qform_code"])
    np.testing.assert_array_equal(io.load_image(path).array, mask)


def test_nifti_errors_are_one_line(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    with pytest.raises(io.ImageFormatError, match=r"broken\.nii\.gz: not a readable"):
        io.load_nifti(bad)
    with pytest.raises(io.ImageFormatError, match=r"missing\.nii: no such file"):
        io.load_nifti(tmp_path / "missing.nii")
    volume = io.Volume(np.zeros((64, 64, 31), np.float32), np.eye(4))
    with pytest.raises(io.ImageFormatError) as error:
        mask = np.zeros((64, 64, 30), np.uint8)
        io.save_like(mask, volume, tmp_path / "case_3.nii.gz")
    message = str(error.value)
    assert message.endswith("case_3.nii.gz: mask shape (64, 64, 30) does not match "
                            "image (64, 64, 31)")
    assert "\n" not in message


# --------------------------------------------------------------------------- DICOM


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
        27.5, 30.0, 32.5, 35.0, 37.5
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
    with pytest.raises(io.ImageFormatError, match="not empty"):
        io.save_dicom_series(mask, reference, tmp_path / "seg")
    with pytest.raises(io.ImageFormatError, match="no DICOM slices"):
        resampled = io.resample_to_spacing(reference, 1.0)
        io.save_dicom_series(mask, resampled, tmp_path / "x")


# --------------------------------------------------------------------------- PNG


def test_png_load_and_mask_save(tmp_path):
    gray = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 256
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "gray.png")
    volume = io.load_png(tmp_path / "gray.png")
    assert volume.array.shape == (20, 30) and volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, gray)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    assert volume.spacing == (1.0, 1.0)

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 200  # green: luminance 0.587 * 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.load_image(tmp_path / "rgb.png").array, 117)

    mask = np.zeros((20, 30), np.int64)
    mask[3:8, 4:9] = 1
    mask[10:15, 20:28] = 5
    path = io.save_like(mask, volume, tmp_path / "out" / "mask.png")
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (30, 20)
    np.testing.assert_array_equal(io.load_png(path).array, mask)
    with pytest.raises(io.ImageFormatError, match="0..255"):
        io.save_png_mask(mask * 100, tmp_path / "big.png")
    (tmp_path / "fake.png").write_text("no png")
    with pytest.raises(io.ImageFormatError, match="fake.png: not a readable PNG"):
        io.load_png(tmp_path / "fake.png")


def test_overlay_draws_yellow_prediction_and_red_truth(tmp_path):
    image = np.linspace(-100, 100, 20 * 30).reshape(20, 30)
    mask = np.zeros((20, 30), np.int32)
    mask[5:11, 5:16] = 1
    truth = np.zeros((20, 30), np.int32)
    truth[12:18, 18:26] = 1
    path = io.save_overlay_png(image, mask, tmp_path / "overlay.png", truth=truth)
    with Image.open(path) as loaded:
        assert loaded.size == (30, 20) and loaded.mode == "RGB"
        rgb = np.array(loaded)
    assert tuple(rgb[5, 5]) == (255, 255, 0)  # corner of the prediction
    assert tuple(rgb[10, 10]) == (255, 255, 0)  # bottom edge
    assert tuple(rgb[12, 20]) == (255, 0, 0)  # top edge of the truth
    inside = rgb[8, 10]
    assert inside[0] == inside[1] == inside[2]  # interior stays gray
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[-1, -1]) == (255, 255, 255)
    edges = io.mask_edges(mask)
    assert edges.sum() == 2 * 6 + 2 * 11 - 4  # the rectangle's outline
    with pytest.raises(io.ImageFormatError, match="mask shape"):
        io.save_overlay_png(image, mask[:5], tmp_path / "bad.png")


# --------------------------------------------------------------------------- intensity


def test_ct_window_on_hand_values_and_like_the_pipeline():
    hu = np.array([-1000.0, -160.0, 40.0, 140.0, 240.0, 3000.0])
    np.testing.assert_allclose(
        io.ct_window(hu, 40, 400), [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7
    )
    assert io.ct_window(hu, 40, 400).dtype == np.float32
    np.testing.assert_allclose(
        io.ct_window(hu, 0, 2000), [-1, -0.16, 0.04, 0.14, 0.24, 1], atol=1e-6
    )

    from medjax.data.pipeline import CTWindow

    values = np.random.default_rng(0).uniform(-1200, 1200, size=1000)
    np.testing.assert_array_equal(
        io.ct_window(values, 50, 350), CTWindow(50, 350)(values)
    )


def test_zscore_on_hand_values():
    np.testing.assert_allclose(
        io.zscore(np.array([1.0, 2.0, 3.0, 4.0])),
        np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25),
        rtol=1e-6,
    )
    image = np.array([1.0, 2.0, 3.0, 100.0])
    out = io.zscore(image, mask=np.array([1, 1, 1, 0]))
    np.testing.assert_allclose(out, (image - 2.0) / np.sqrt(2 / 3), rtol=1e-6)
    np.testing.assert_array_equal(io.zscore(np.full(5, 7.0)), np.zeros(5))  # std floor
    assert out.dtype == np.float32


# --------------------------------------------------------------------------- resampling


def test_resample_halving_spacing_doubles_shape_and_keeps_voxel_zero():
    affine = oblique_affine(spacing=(2.0, 3.0, 4.0))
    ramp = np.broadcast_to(np.arange(9.0)[:, None, None], (9, 7, 5)).astype(np.float32)
    volume = io.Volume(ramp, affine, source="nifti")
    finer = io.resample_to_spacing(volume, (1.0, 1.5, 2.0))
    assert finer.array.shape == (18, 14, 10)
    np.testing.assert_allclose(finer.spacing, (1.0, 1.5, 2.0))
    np.testing.assert_allclose(finer.world((0, 0, 0)), volume.world((0, 0, 0)))
    # Directions kept: new voxel (2, 2, 2) is old voxel (1, 1, 1).
    np.testing.assert_allclose(finer.world((2, 2, 2)), volume.world((1, 1, 1)))
    # Linear interpolation of a ramp is exact inside the old grid.
    np.testing.assert_allclose(finer.array[:17, 3, 4], np.arange(17) * 0.5, atol=1e-5)
    assert finer.source == "array"

    coarser = io.resample_to_spacing(volume, 3.0)
    assert coarser.array.shape == (6, 7, 7)  # round(9*2/3), round(7*3/3), round(5*4/3)


def test_resample_labels_keep_only_existing_labels():
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:6, 3:9, 1:5] = 3
    labels[6:9, 1:4, 4:7] = 7
    volume = io.Volume(labels, oblique_affine(spacing=(1.0, 1.0, 2.5)))
    resampled = io.resample_to_spacing(volume, (0.7, 1.3, 1.0))
    assert resampled.array.dtype == np.uint8
    assert resampled.array.shape == (14, 9, 20)
    assert set(np.unique(resampled.array)) == {0, 3, 7}


def test_resample_keeps_channels():
    image = np.random.default_rng(1).normal(size=(8, 6, 4, 2)).astype(np.float32)
    volume = io.Volume(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    resampled = io.resample_to_spacing(volume, 1.0)
    assert resampled.array.shape == (16, 12, 8, 2)
    np.testing.assert_allclose(resampled.array[::2, ::2, ::2], image, atol=1e-5)


def test_center_crop_or_pad():
    array = np.arange(5 * 4).reshape(5, 4)
    out = io.center_crop_or_pad(array, (3, 7), pad_value=-1)
    assert out.shape == (3, 7)
    np.testing.assert_array_equal(out[:, 1:5], array[1:4])
    assert (out[:, 0] == -1).all() and (out[:, 5:] == -1).all()


# --------------------------------------------------------------------------- Decathlon


def make_decathlon(root, *, count=4, shape=(20, 18, 9), channels=None, modality=None):
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-20.0, -18.0, 4.0)
    training, images, labels = [], [], []
    for n in range(count):
        image_shape = shape + ((channels,) if channels else ())
        image = rng.integers(-1000, 1000, size=image_shape).astype(np.int16)
        label = rng.integers(0, 3, size=shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{n}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{n}.nii.gz")
        training.append(
            {
                "image": f"./imagesTr/case_{n}.nii.gz",
                "label": f"./labelsTr/case_{n}.nii.gz",
            }
        )
        images.append(image)
        labels.append(label)
    description = {
        "name": "Tiny",
        "modality": modality or {"0": "CT"},
        "labels": {"0": "background", "1": "organ", "2": "tumour"},
        "numTraining": count,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return images, labels


def test_decathlon_splits_are_disjoint_and_deterministic(tmp_path):
    make_decathlon(tmp_path)
    splits = io.decathlon_sources(tmp_path, shape=(20, 18, 9), validation_fraction=0.25)
    assert (len(splits["train"]), len(splits["validation"])) == (3, 1)
    train, validation = set(splits["train"].cases), set(splits["validation"].cases)
    assert not train & validation and len(train | validation) == 4
    again = io.DecathlonSource(tmp_path, shape=(20, 18, 9), split="validation",
                               validation_fraction=0.25)
    assert again.cases == splits["validation"].cases
    chosen = {
        io.DecathlonSource(tmp_path, shape=(4, 4, 4), split="validation",
                           validation_fraction=0.25, seed=seed).cases[0]
        for seed in range(10)
    }
    assert len(chosen) > 1  # the seed picks the split
    assert splits["train"].labels == {0: "background", 1: "organ", 2: "tumour"}
    assert splits["train"].modality == {0: "CT"}
    assert len(io.DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")) == 4


def test_decathlon_item_without_resampling_is_the_windowed_case(tmp_path):
    images, labels = make_decathlon(tmp_path)
    source = io.DecathlonSource(tmp_path, shape=(20, 18, 9), split="all",
                                window=(0.0, 1000.0))
    assert source.normalization == "ct"
    example = source[2]
    assert example["image"].shape == (20, 18, 9, 1)
    assert example["image"].dtype == np.float32
    assert example["mask"].dtype == np.int32
    np.testing.assert_array_equal(
        example["image"][..., 0], io.ct_window(images[2], 0, 1000)
    )
    np.testing.assert_array_equal(example["mask"], labels[2])
    np.testing.assert_array_equal(example["spacing"], np.float32([2, 2, 2]))
    assert example["spacing"].dtype == np.float32
    batch = source.__getitems__([0, 3])
    assert len(batch) == 2
    np.testing.assert_array_equal(batch[1]["mask"], labels[3])

    import grain

    dataset = grain.MapDataset.source(source).map(lambda e: e["mask"].sum())
    assert dataset[1] == labels[1].sum()


def test_decathlon_resamples_crops_and_pads(tmp_path):
    images, labels = make_decathlon(tmp_path)
    source = io.DecathlonSource(tmp_path, shape=(32, 40, 16), split="all",
                                target_spacing=1.0)
    example = source[0]
    # 20x18x9 at 2 mm is 40x36x18 at 1 mm: crop i by 8, pad j by 4, crop k by 2.
    assert example["image"].shape == (32, 40, 16, 1)
    assert example["mask"].shape == (32, 40, 16)
    np.testing.assert_array_equal(example["spacing"], np.float32([1, 1, 1]))
    image = example["image"][..., 0]
    assert image.min() >= -1 and image.max() <= 1
    assert (image[:, :2] == image.min()).all() and (image[:, -2:] == image.min()).all()
    assert (example["mask"][:, :2] == 0).all() and (example["mask"][:, -2:] == 0).all()
    assert set(np.unique(example["mask"])) == {0, 1, 2}
    # Voxel (0, 0, 0) of the 1 mm grid is the old voxel (0, 0, 0): after the centre
    # crop, output (0, 2, 0) is resampled (4, 0, 1), i.e. old voxel (2, 0, 0.5).
    volume = io.resample_to_spacing(
        io.Volume(labels[0], np.diag([2.0, 2.0, 2.0, 1.0])), 1.0
    )
    np.testing.assert_array_equal(
        example["mask"][:, 2:38], volume.array[4:36, :, 1:17].astype(np.int32)
    )


def test_decathlon_multimodal_images_are_channels_last_zscored(tmp_path):
    images, _ = make_decathlon(tmp_path, channels=2, modality={"0": "T1", "1": "T2"})
    source = io.DecathlonSource(tmp_path, shape=(20, 18, 9), split="all")
    assert source.normalization == "zscore"
    image = source[1]["image"]
    assert image.shape == (20, 18, 9, 2)
    np.testing.assert_allclose(image.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(image.std(axis=(0, 1, 2)), 1, rtol=1e-4)
    np.testing.assert_allclose(image[..., 1], io.zscore(images[1][..., 1]), rtol=1e-6)


def test_decathlon_errors_name_the_file(tmp_path):
    with pytest.raises(io.ImageFormatError, match=r"dataset\.json: missing"):
        io.DecathlonSource(tmp_path, shape=(4, 4, 4))

    make_decathlon(tmp_path)
    missing = tmp_path / "labelsTr" / "case_2.nii.gz"
    missing.unlink()
    with pytest.raises(io.ImageFormatError) as error:
        io.DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")
    assert str(error.value) == f"{missing}: listed in dataset.json but missing"

    nib.save(nib.Nifti1Image(np.zeros((20, 18, 8), np.uint8), np.eye(4)), missing)
    with pytest.raises(io.ImageFormatError) as error:
        io.DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")
    assert str(error.value) == (
        f"{missing}: shape (20, 18, 8) does not match image (20, 18, 9)"
    )
