import numpy as np
import pytest

from medjax.data.datasets.phantoms import builder as builders
from medjax.data.datasets.phantoms.torso import case_rng, torso_slice
from tests.conftest import TINY_SPLITS


def test_records_equal_the_generator_and_rebuild_identically(data_dir, tmp_path):
    first = builders.phantom_sources(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir)
    again = builders.phantom_sources(
        image_size=32, split_sizes=TINY_SPLITS, data_dir=str(tmp_path)
    )
    config = builders.phantom_config(image_size=32, split_sizes=TINY_SPLITS)
    assert {split: len(s) for split, s in first.items()} == TINY_SPLITS
    for split in TINY_SPLITS:
        for index in (0, len(first[split]) - 1):
            a, b = first[split][index], again[split][index]
            expected = torso_slice(case_rng(0, split, index), 32)
            np.testing.assert_array_equal(a["image"][..., 0], expected["image"])
            np.testing.assert_array_equal(a["mr_image"][..., 0], expected["mr_image"])
            for key in ("organ_mask", "lesion_mask", "lesion_centers", "landmarks",
                        "landmarks_valid", "lesion_valid", "lesion_types"):
                np.testing.assert_array_equal(a[key], expected[key])
            assert a["label"] == expected["label"]
            generated = builders.generate_case(config, split, index)
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
                np.testing.assert_array_equal(a[key], generated[key])


def test_record_types(data_dir):
    record = builders.phantom_sources(
        image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir
    )["train"][3]
    assert record["image"].dtype == np.int16 and record["image"].shape == (32, 32, 1)
    assert record["organ_mask"].dtype == np.uint8
    assert record["organ_mask"].shape == (32, 32)
    assert record["lesion_centers"].shape == (3, 2)


@pytest.mark.parametrize(
    "kind, shapes",
    [
        ("torso3d", {"image": (16, 16, 16, 1), "organ_mask": (16, 16, 16),
                     "lesion_centers": (5, 3), "landmarks": (6, 3)}),
        ("cine2d", {"image": (4, 16, 16, 1), "mask": (4, 16, 16), "ejection_fraction": ()}),
    ],
)
def test_other_configs_build(kind, shapes, tmp_path):
    sources = builders.phantom_sources(
        kind, image_size=16, split_sizes={"train": 3, "test": 2}, data_dir=str(tmp_path),
        num_frames=4,
    )
    assert {s: len(v) for s, v in sources.items()} == {"train": 3, "test": 2}
    record = sources["test"][1]
    for key, shape in shapes.items():
        assert np.shape(record[key]) == shape, key


def test_config_names():
    assert builders.phantom_config(image_size=64).name == "torso2d_64"
    assert builders.phantom_config(image_size=128).name == "torso2d_128"
    assert builders.phantom_config("torso3d", 64).name == "torso3d_64"
    assert builders.phantom_config("cine2d", 64, num_frames=8).name == "cine2d_64_frames8"
    predefined = {c.name for c in builders.MedjaxPhantoms.BUILDER_CONFIGS}
    assert predefined == {"torso2d_64", "torso2d_128", "torso2d_256", "torso3d_64", "cine2d_64"}
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


def test_phantom_datasets_build_when_a_split_is_first_read(tmp_path):
    from medjax.data.datasets.phantoms import phantoms

    data = phantoms(image_size=16, split_sizes={"train": 3, "validation": 2},
                    data_dir=str(tmp_path), batch_size=1, eval_batch_size=1)
    assert sorted(data.sources) == ["train", "validation"]
    assert data.spacing == (25.0, 25.0)
    assert not any(tmp_path.iterdir())  # knowing the data built nothing
    assert len(data.source("validation")) == 2
    assert any(tmp_path.iterdir())
