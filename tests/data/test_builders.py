import numpy as np
import pytest

from medjax.data import builders
from medjax.data.phantoms import case_rng, torso_slice
from tests.conftest import TINY_SPLITS


def test_records_equal_the_generator_and_rebuild_identically(data_dir, tmp_path):
    first = builders.phantom_sources(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir)
    again = builders.phantom_sources(
        image_size=32, split_sizes=TINY_SPLITS, data_dir=str(tmp_path)
    )
    assert {split: len(s) for split, s in first.items()} == TINY_SPLITS
    for split in TINY_SPLITS:
        for index in (0, len(first[split]) - 1):
            a, b = first[split][index], again[split][index]
            expected = torso_slice(case_rng(0, split, index), 32)
            np.testing.assert_array_equal(a["image"][..., 0], expected["image"])
            np.testing.assert_array_equal(a["organ_mask"][..., 0], expected["organ_mask"])
            np.testing.assert_array_equal(a["lesion_mask"][..., 0], expected["lesion_mask"])
            assert a["label"] == expected["label"]
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_record_types(data_dir):
    record = builders.phantom_sources(
        image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir
    )["train"][3]
    assert record["image"].dtype == np.int16 and record["image"].shape == (32, 32, 1)
    assert record["organ_mask"].dtype == np.uint8
    assert record["organ_mask"].shape == (32, 32, 1)


def test_config_names():
    assert builders.phantom_config(image_size=64).name == "torso2d_64"
    assert builders.phantom_config(image_size=128).name == "torso2d_128"
    custom = builders.phantom_config(image_size=32, split_sizes={"train": 5}, seed=2)
    assert custom.name == "torso2d_32_train5_seed2"


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"kind": "brain"}, "data.kind"),
        ({"image_size": 8}, "data.image_size"),
        ({"split_sizes": {"train": 0}}, "data.split_sizes.train"),
    ],
)
def test_bad_settings_name_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        builders.phantom_config(**kwargs)
