"""NIfTI in and out (``medjax.data.io.nifti``) against nibabel."""

import os

import nibabel as nib
import numpy as np
import pytest

from medjax.data import io
from tests.data.geometry import oblique_affine

ANATOMICAL = os.path.join(
    os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii"
)


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
    assert message.endswith(
        "case_3.nii.gz: mask shape (64, 64, 30) does not match image (64, 64, 31)"
    )
    assert "\n" not in message


# --------------------------------------------------------------------------- DICOM
