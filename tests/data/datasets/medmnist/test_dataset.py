"""The ``medmnist()`` dataset: records equal the npz, scaled as the official
scripts; options; missing files; the Hydra config."""

import numpy as np
import pytest

from medjax.data import pipeline
from medjax.data.datasets import medmnist
from medjax.errors import ConfigError
from tests.data.datasets.medmnist.files import SPLIT_OF_NPZ, write_medmnist_npz


def dataset_of(tmp_path, flag, size=28, **kwargs):
    manual = tmp_path / "manual"
    arrays = write_medmnist_npz(manual, flag, size)
    data = medmnist.medmnist(
        flag, size, manual_dir=str(manual), data_dir=str(tmp_path / "tfds"), **kwargs
    )
    return data, arrays


def check_every_record(data, arrays, flag, low, high):
    """Records equal the npz in order; examples are the documented scaling."""
    for split, npz_split in SPLIT_OF_NPZ.items():
        images = arrays[f"{npz_split}_images"]
        labels = arrays[f"{npz_split}_labels"]
        source = data.source(split)
        assert len(source) == len(images)
        for index, record in enumerate(source.__getitems__(list(range(len(images))))):
            stored = record["image"]
            assert stored.dtype == np.uint8
            assert stored.shape == medmnist.image_shape(flag, images.shape[1])
            if stored.shape[-1] == 1 and images.ndim == stored.ndim:  # grey / 3D
                np.testing.assert_array_equal(stored[..., 0], images[index])
            else:
                np.testing.assert_array_equal(stored, images[index])
            example = data.convert(record)
            assert example["image"].dtype == np.float32
            assert example["image"].shape == stored.shape
            expected = low + (high - low) * stored.astype(np.float64) / 255.0
            np.testing.assert_allclose(example["image"], expected, rtol=0, atol=1e-6)
            back = np.rint((example["image"] - low) / (high - low) * 255.0)
            np.testing.assert_array_equal(back.astype(np.uint8), stored)
            assert example["label"].dtype == np.int32
            if medmnist.is_multi_label(flag):
                np.testing.assert_array_equal(example["label"], labels[index])
            else:
                assert example["label"].shape == ()
                assert example["label"] == labels[index, 0]


def test_2d_grey_records_equal_the_npz_in_order_scaled_to_minus_one_one(tmp_path):
    data, arrays = dataset_of(tmp_path, "pneumoniamnist")
    check_every_record(data, arrays, "pneumoniamnist", -1.0, 1.0)
    example = data.convert(data.source("train")[0])
    assert example["image"].shape == (28, 28, 1)
    assert example["image"].flat[0] == -1.0 and example["image"].flat[1] == 1.0
    assert data.spacing is None
    np.testing.assert_array_equal(
        data.normalize(np.array([0, 255], np.uint8)), np.float32([-1, 1])
    )


def test_2d_rgb_at_size_64_reads_flag_64_npz(tmp_path):
    data, arrays = dataset_of(tmp_path, "dermamnist", size=64)
    assert (tmp_path / "manual" / "dermamnist_64.npz").is_file()
    assert not (tmp_path / "manual" / "dermamnist.npz").exists()
    check_every_record(data, arrays, "dermamnist", -1.0, 1.0)
    assert data.source("test")[0]["image"].shape == (64, 64, 3)


def test_3d_volumes_keep_the_file_axis_order_and_scale_to_unit(tmp_path):
    data, arrays = dataset_of(tmp_path, "organmnist3d")
    check_every_record(data, arrays, "organmnist3d", 0.0, 1.0)
    record = data.source("validation")[2]
    assert record["image"].shape == (28, 28, 28, 1)
    np.testing.assert_array_equal(
        record["image"][3, 5, 7, 0], arrays["val_images"][2, 3, 5, 7]
    )


def test_multi_label_chestmnist_keeps_fourteen_labels(tmp_path):
    data, arrays = dataset_of(tmp_path, "chestmnist")
    check_every_record(data, arrays, "chestmnist", -1.0, 1.0)
    label = data.convert(data.source("train")[4])["label"]
    assert label.shape == (14,) and set(np.unique(label)) <= {0, 1}


def test_eval_batches_cover_the_split_in_order(tmp_path):
    data, arrays = dataset_of(tmp_path, "breastmnist", eval_batch_size=2)
    batches = list(
        pipeline.eval_batches(
            data.source("test"),
            batch_size=2,
            convert=data.convert,
            keys=("image", "label"),
            num_threads=1,
        )
    )
    labels = np.concatenate([b["label"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(labels, arrays["test_labels"][:, 0])
    assert batches[0]["image"].shape == (2, 28, 28, 1)


def test_intensity_range_and_split_sizes(tmp_path):
    data, arrays = dataset_of(
        tmp_path, "bloodmnist", intensity_range=(0, 1), split_sizes={"train": 2}
    )
    assert len(data.source("train")) == 2 and len(data.source("test")) == 4
    example = data.convert(data.source("train")[1])
    np.testing.assert_allclose(
        example["image"], arrays["train_images"][1] / np.float32(255), atol=1e-7
    )
    with pytest.raises(ConfigError, match="intensity_range"):
        medmnist.medmnist("bloodmnist", intensity_range=(1, 0))
    with pytest.raises(ConfigError, match=r"intensity_range=\[0, 1, 2\]"):
        medmnist.medmnist("bloodmnist", intensity_range=[0, 1, 2])
    with pytest.raises(ConfigError, match="spacing.*expected one positive number or 3"):
        medmnist.medmnist("vesselmnist3d", spacing=[1.0, 1.0])
    isotropic = medmnist.medmnist(
        "bloodmnist",
        manual_dir=str(tmp_path / "manual"),
        spacing=0.5,
        data_dir=str(tmp_path / "tfds"),
    )
    assert isotropic.spacing == (0.5, 0.5)
    with pytest.raises(ConfigError, match="split_sizes: unknown splits \\['val'\\]"):
        medmnist.medmnist("bloodmnist", split_sizes={"val": 2})
    too_many = medmnist.medmnist(
        "bloodmnist",
        manual_dir=str(tmp_path / "manual"),
        data_dir=str(tmp_path / "tfds"),
        split_sizes={"test": 9},
    )
    with pytest.raises(
        ConfigError, match="split_sizes.test=9: the test split has only 4"
    ):
        too_many.source("test")


def test_missing_file_error_names_file_directory_and_zenodo(tmp_path):
    write_medmnist_npz(tmp_path, "pathmnist", 28)  # present, but not the 64 one
    with pytest.raises(ConfigError) as error:
        medmnist.medmnist(
            "pathmnist", 64, manual_dir=str(tmp_path), data_dir=str(tmp_path / "t")
        )
    message = str(error.value)
    assert "pathmnist_64.npz" in message and str(tmp_path) in message
    assert "https://zenodo.org/records/10519652" in message
    assert "download it yourself" in message and "\n" not in message
    missing_dir = tmp_path / "nowhere"
    with pytest.raises(
        ConfigError, match=f"organmnist3d.npz is missing from {missing_dir}"
    ):
        medmnist.medmnist(
            "organmnist3d", manual_dir=str(missing_dir), data_dir=str(tmp_path)
        )


def test_manual_dir_defaults_to_medmnist_dir_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_DIR", str(tmp_path / "env"))
    assert medmnist.default_manual_dir() == str(tmp_path / "env")
    arrays = write_medmnist_npz(tmp_path / "env", "octmnist")
    data = medmnist.medmnist("octmnist", data_dir=str(tmp_path / "tfds"))
    np.testing.assert_array_equal(
        data.source("test")[3]["image"][..., 0], arrays["test_images"][3]
    )
    monkeypatch.delenv("MEDMNIST_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert medmnist.default_manual_dir() == str(tmp_path / "home" / ".medmnist")


def test_hydra_config_builds_the_dataset(tmp_path):
    from medjax.config import compose
    from medjax.config.build import build

    arrays = write_medmnist_npz(tmp_path / "manual", "pathmnist")
    cfg = compose(
        "train",
        [
            "data=medmnist",
            f"data.manual_dir={tmp_path / 'manual'}",
            f"data.data_dir={tmp_path / 'tfds'}",
        ],
    )
    assert (cfg.data.flag, cfg.data.size, cfg.data.batch_size) == ("pathmnist", 28, 128)
    data = build(cfg.data, "data")
    assert data.batch_size == 128 and data.eval_batch_size == 256
    np.testing.assert_array_equal(
        data.source("train")[4]["image"], arrays["train_images"][4]
    )
    cfg = compose("train", ["data=medmnist", "data.flag=pathmnst"])
    with pytest.raises(ConfigError, match="data.flag='pathmnst'"):
        build(cfg.data, "data")
