"""Host preprocessing (``medjax.data.preprocess``) on hand-computed values."""

import numpy as np

from medjax.data import io, preprocess
from tests.data.geometry import oblique_affine


def test_ct_window_on_hand_values_and_like_the_pipeline():
    hu = np.array([-1000.0, -160.0, 40.0, 140.0, 240.0, 3000.0])
    np.testing.assert_allclose(
        preprocess.ct_window(hu, 40, 400), [-1.0, -1.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7
    )
    assert preprocess.ct_window(hu, 40, 400).dtype == np.float32
    np.testing.assert_allclose(
        preprocess.ct_window(hu, 0, 2000), [-1, -0.16, 0.04, 0.14, 0.24, 1], atol=1e-6
    )

    from medjax.data.pipeline import CTWindow

    values = np.random.default_rng(0).uniform(-1200, 1200, size=1000)
    np.testing.assert_array_equal(
        preprocess.ct_window(values, 50, 350), CTWindow(50, 350)(values)
    )


def test_zscore_on_hand_values():
    np.testing.assert_allclose(
        preprocess.zscore(np.array([1.0, 2.0, 3.0, 4.0])),
        np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25),
        rtol=1e-6,
    )
    image = np.array([1.0, 2.0, 3.0, 100.0])
    out = preprocess.zscore(image, mask=np.array([1, 1, 1, 0]))
    np.testing.assert_allclose(out, (image - 2.0) / np.sqrt(2 / 3), rtol=1e-6)
    np.testing.assert_array_equal(
        preprocess.zscore(np.full(5, 7.0)), np.zeros(5)
    )  # std floor
    assert out.dtype == np.float32


def test_resample_halving_spacing_doubles_shape_and_keeps_voxel_zero():
    affine = oblique_affine(spacing=(2.0, 3.0, 4.0))
    ramp = np.broadcast_to(np.arange(9.0)[:, None, None], (9, 7, 5)).astype(np.float32)
    volume = io.Volume(ramp, affine, source="nifti")
    finer = preprocess.resample_to_spacing(volume, (1.0, 1.5, 2.0))
    assert finer.array.shape == (18, 14, 10)
    np.testing.assert_allclose(finer.spacing, (1.0, 1.5, 2.0))
    np.testing.assert_allclose(finer.world((0, 0, 0)), volume.world((0, 0, 0)))
    # Directions kept: new voxel (2, 2, 2) is old voxel (1, 1, 1).
    np.testing.assert_allclose(finer.world((2, 2, 2)), volume.world((1, 1, 1)))
    # Linear interpolation of a ramp is exact inside the old grid.
    np.testing.assert_allclose(finer.array[:17, 3, 4], np.arange(17) * 0.5, atol=1e-5)
    assert finer.source == "array"

    coarser = preprocess.resample_to_spacing(volume, 3.0)
    assert coarser.array.shape == (6, 7, 7)  # round(9*2/3), round(7*3/3), round(5*4/3)


def test_resample_labels_keep_only_existing_labels():
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:6, 3:9, 1:5] = 3
    labels[6:9, 1:4, 4:7] = 7
    volume = io.Volume(labels, oblique_affine(spacing=(1.0, 1.0, 2.5)))
    resampled = preprocess.resample_to_spacing(volume, (0.7, 1.3, 1.0))
    assert resampled.array.dtype == np.uint8
    assert resampled.array.shape == (14, 9, 20)
    assert set(np.unique(resampled.array)) == {0, 3, 7}


def test_resample_keeps_channels():
    image = np.random.default_rng(1).normal(size=(8, 6, 4, 2)).astype(np.float32)
    volume = io.Volume(image, np.diag([2.0, 2.0, 2.0, 1.0]))
    resampled = preprocess.resample_to_spacing(volume, 1.0)
    assert resampled.array.shape == (16, 12, 8, 2)
    np.testing.assert_allclose(resampled.array[::2, ::2, ::2], image, atol=1e-5)


def test_center_crop_or_pad():
    array = np.arange(5 * 4).reshape(5, 4)
    out = preprocess.center_crop_or_pad(array, (3, 7), pad_value=-1)
    assert out.shape == (3, 7)
    np.testing.assert_array_equal(out[:, 1:5], array[1:4])
    assert (out[:, 0] == -1).all() and (out[:, 5:] == -1).all()


# --------------------------------------------------------------------------- Decathlon
