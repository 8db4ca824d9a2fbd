"""The TFDS builder ``medmnist`` (``medmnist/builder.py``)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.data.datasets import medmnist
from medjax.errors import ConfigError
from tests.data.datasets.medmnist.files import write_medmnist_npz


def test_builder_is_named_medmnist_with_official_class_names(tmp_path):
    write_medmnist_npz(tmp_path / "manual", "pathmnist")
    builder = medmnist.Medmnist(
        config="pathmnist_28",
        data_dir=str(tmp_path / "tfds"),
        file_format="array_record",
    )
    assert builder.name == "medmnist"
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(tmp_path / "manual")
        )
    )
    info = builder.info
    assert info.disable_shuffling
    assert {name: split.num_examples for name, split in info.splits.items()} == {
        "train": 5,
        "validation": 3,
        "test": 4,
    }
    names = info.features["label"].names
    assert len(names) == 9 and names[0] == "adipose"
    assert names[8] == "colorectal adenocarcinoma epithelium"
    assert info.features["image"].shape == (28, 28, 3)
    assert builder.as_data_source(split="test")[0]["label"] in range(9)
    assert "zenodo.org/records/10519652" in builder.MANUAL_DOWNLOAD_INSTRUCTIONS
    assert "medmnist/organmnist3d_64" in {
        f"medmnist/{c.name}" for c in medmnist.Medmnist.BUILDER_CONFIGS
    }


def test_multi_label_feature_is_an_int_tensor(tmp_path):
    builder = medmnist.Medmnist(config="chestmnist_128", data_dir=str(tmp_path))
    label = builder.info.features["label"]
    assert isinstance(label, tfds.features.Tensor)
    assert label.shape == (14,) and label.np_dtype == np.int32
    assert builder.info.features["image"].shape == (128, 128, 1)


def test_missing_file_through_the_builder(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "other.txt").write_text("x")
    builder = medmnist.Medmnist(
        config="retinamnist_224", data_dir=str(tmp_path / "tfds")
    )
    with pytest.raises(
        ConfigError, match="retinamnist_224.npz is missing from .*manual"
    ):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=str(tmp_path / "manual")
            )
        )
