"""Decathlon folders (``medjax.data.datasets.decathlon``) on tiny NIfTI cases."""

import nibabel as nib
import numpy as np
import pytest

from medjax.data import io, preprocess
from medjax.data.datasets.decathlon import DecathlonSource, decathlon_sources
from tests.data.datasets.decathlon_folder import make_decathlon


def test_decathlon_splits_are_disjoint_and_deterministic(tmp_path):
    make_decathlon(tmp_path)
    splits = decathlon_sources(tmp_path, shape=(20, 18, 9), validation_fraction=0.25)
    assert (len(splits["train"]), len(splits["validation"])) == (3, 1)
    train, validation = set(splits["train"].cases), set(splits["validation"].cases)
    assert not train & validation and len(train | validation) == 4
    again = DecathlonSource(
        tmp_path, shape=(20, 18, 9), split="validation", validation_fraction=0.25
    )
    assert again.cases == splits["validation"].cases
    chosen = {
        DecathlonSource(
            tmp_path,
            shape=(4, 4, 4),
            split="validation",
            validation_fraction=0.25,
            seed=seed,
        ).cases[0]
        for seed in range(10)
    }
    assert len(chosen) > 1  # the seed picks the split
    assert splits["train"].labels == {0: "background", 1: "organ", 2: "tumour"}
    assert splits["train"].modality == {0: "CT"}
    assert len(DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")) == 4


def test_decathlon_item_without_resampling_is_the_windowed_case(tmp_path):
    images, labels = make_decathlon(tmp_path)
    source = DecathlonSource(
        tmp_path, shape=(20, 18, 9), split="all", window=(0.0, 1000.0)
    )
    assert source.normalization == "ct"
    example = source[2]
    assert example["image"].shape == (20, 18, 9, 1)
    assert example["image"].dtype == np.float32
    assert example["mask"].dtype == np.int32
    np.testing.assert_array_equal(
        example["image"][..., 0], preprocess.ct_window(images[2], 0, 1000)
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
    _, labels = make_decathlon(tmp_path)
    source = DecathlonSource(
        tmp_path, shape=(32, 40, 16), split="all", target_spacing=1.0
    )
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
    volume = preprocess.resample_to_spacing(
        io.Volume(labels[0], np.diag([2.0, 2.0, 2.0, 1.0])), 1.0
    )
    np.testing.assert_array_equal(
        example["mask"][:, 2:38], volume.array[4:36, :, 1:17].astype(np.int32)
    )


def test_decathlon_multimodal_images_are_channels_last_zscored(tmp_path):
    images, _ = make_decathlon(tmp_path, channels=2, modality={"0": "T1", "1": "T2"})
    source = DecathlonSource(tmp_path, shape=(20, 18, 9), split="all")
    assert source.normalization == "zscore"
    image = source[1]["image"]
    assert image.shape == (20, 18, 9, 2)
    np.testing.assert_allclose(image.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(image.std(axis=(0, 1, 2)), 1, rtol=1e-4)
    np.testing.assert_allclose(
        image[..., 1], preprocess.zscore(images[1][..., 1]), rtol=1e-6
    )


def test_decathlon_errors_name_the_file(tmp_path):
    with pytest.raises(io.ImageFormatError, match=r"dataset\.json: missing"):
        DecathlonSource(tmp_path, shape=(4, 4, 4))

    make_decathlon(tmp_path)
    missing = tmp_path / "labelsTr" / "case_2.nii.gz"
    missing.unlink()
    with pytest.raises(io.ImageFormatError) as error:
        DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")
    assert str(error.value) == f"{missing}: listed in dataset.json but missing"

    nib.save(nib.Nifti1Image(np.zeros((20, 18, 8), np.uint8), np.eye(4)), missing)
    with pytest.raises(io.ImageFormatError) as error:
        DecathlonSource(tmp_path, shape=(4, 4, 4), split="all")
    assert str(error.value) == (
        f"{missing}: shape (20, 18, 8) does not match image (20, 18, 9)"
    )
