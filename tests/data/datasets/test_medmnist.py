"""MedMNIST builder and dataset, on tiny npz files written in the official format
(``<flag>[_<size>].npz`` with uint8 ``{train,val,test}_{images,labels}``)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from medjax.data import io, pipeline
from medjax.data.datasets import medmnist
from medjax.errors import ConfigError

TINY_COUNTS = {"train": 5, "val": 3, "test": 4}
SPLIT_OF_NPZ = {"train": "train", "validation": "val", "test": "test"}


def official_image_shape(flag: str, size: int) -> tuple[int, ...]:
    """Per-image shape as the official npz stores it (no channel for grey)."""
    if medmnist.spatial_dims(flag) == 3:
        return (size,) * 3
    return (size, size) if medmnist.num_channels(flag) == 1 else (size, size, 3)


def write_medmnist_npz(directory, flag, size=28, counts=None, seed=0):
    """Writes random data in the official layout; returns the arrays.

    Every label value appears (where the split is long enough) so range checks
    and class order are exercised.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (counts or TINY_COUNTS).items():
        arrays[f"{split}_images"] = rng.integers(
            0, 256, (count, *official_image_shape(flag, size)), dtype=np.uint8
        )
        classes = medmnist.num_classes(flag)
        if medmnist.is_multi_label(flag):
            labels = rng.integers(0, 2, (count, classes), dtype=np.uint8)
        else:
            labels = (np.arange(count, dtype=np.uint8) % classes)[::-1, None].copy()
        arrays[f"{split}_labels"] = labels
    arrays["train_images"][0].flat[:2] = (0, 255)  # both ends of the range
    os.makedirs(directory, exist_ok=True)
    np.savez_compressed(
        os.path.join(directory, medmnist.npz_filename(flag, size)), **arrays
    )
    return arrays


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


def test_images_stream_from_c_and_fortran_ordered_arrays(tmp_path):
    arrays = write_medmnist_npz(tmp_path / "c", "bloodmnist")
    fortran = {key: np.asfortranarray(value) for key, value in arrays.items()}
    np.savez(tmp_path / "bloodmnist.npz", **fortran)  # uncompressed, F order
    for path in (tmp_path / "c" / "bloodmnist.npz", tmp_path / "bloodmnist.npz"):
        images = list(medmnist.iter_images(path, "bloodmnist", "validation"))
        assert len(images) == 3
        for image, expected in zip(images, arrays["val_images"]):
            assert image.shape == (28, 28, 3) and image.dtype == np.uint8
            np.testing.assert_array_equal(image, expected)
    grey = write_medmnist_npz(tmp_path / "g", "synapsemnist3d")
    volumes = list(
        medmnist.iter_images(
            tmp_path / "g" / "synapsemnist3d.npz", "synapsemnist3d", "test"
        )
    )
    np.testing.assert_array_equal(np.stack(volumes)[..., 0], grey["test_images"])
    labels = medmnist.load_labels(
        tmp_path / "g" / "synapsemnist3d.npz", "synapsemnist3d", "test"
    )
    np.testing.assert_array_equal(labels, grey["test_labels"][:, 0])
    assert labels.shape == (4,)


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


def _corrupt(arrays, kind):
    arrays = dict(arrays)
    if kind == "missing key":
        del arrays["val_labels"]
    elif kind == "grey instead of RGB":
        arrays["train_images"] = arrays["train_images"][..., 0]
    elif kind == "four channels":
        arrays["test_images"] = np.concatenate(
            [arrays["test_images"], arrays["test_images"][..., :1]], axis=-1
        )
    elif kind == "wrong size":
        arrays["val_images"] = arrays["val_images"][:, :27]
    elif kind == "float images":
        arrays["train_images"] = arrays["train_images"].astype(np.float32)
    elif kind == "label out of range":
        arrays["test_labels"] = arrays["test_labels"].copy()
        arrays["test_labels"][2] = 9
    elif kind == "labels of another length":
        arrays["train_labels"] = arrays["train_labels"][:4]
    elif kind == "float labels":
        arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
    return arrays


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing key", r"missing keys \['val_labels'\]"),
        (
            "grey instead of RGB",
            r"train_images has shape \[5, 28, 28\], expected \[N, 28, 28, 3\]",
        ),
        (
            "four channels",
            r"test_images has shape \[4, 28, 28, 4\], expected \[N, 28, 28, 3\]",
        ),
        ("wrong size", r"val_images has shape \[3, 27, 28, 3\]"),
        ("float images", "train_images has dtype float32, expected uint8"),
        (
            "label out of range",
            r"test_labels holds values 0\.\.9, expected class indices 0\.\.8",
        ),
        (
            "labels of another length",
            r"train_labels has shape \[4, 1\], expected \[5, 1\] or \[5\]",
        ),
        ("float labels", "train_labels has dtype float32, expected integers"),
    ],
)
def test_malformed_file_is_one_line_naming_the_file(tmp_path, kind, expected):
    arrays = write_medmnist_npz(tmp_path / "good", "pathmnist")
    path = tmp_path / "pathmnist.npz"
    np.savez_compressed(path, **_corrupt(arrays, kind))
    with pytest.raises(medmnist.MedmnistFormatError, match=expected) as error:
        medmnist.medmnist(
            "pathmnist", manual_dir=str(tmp_path), data_dir=str(tmp_path / "t")
        )
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert isinstance(error.value, io.ImageFormatError)
    assert isinstance(error.value, ConfigError)  # reported by the CLI as one line
    assert not (tmp_path / "t" / "medmnist").exists()  # nothing was written


def test_multi_label_values_and_3d_shapes_are_checked(tmp_path):
    arrays = write_medmnist_npz(tmp_path / "good", "chestmnist")
    arrays["val_labels"] = arrays["val_labels"] * 2
    np.savez_compressed(tmp_path / "chestmnist.npz", **arrays)
    with pytest.raises(
        medmnist.MedmnistFormatError, match=r"val_labels holds values \[0, 2\]"
    ):
        medmnist.check_npz(tmp_path / "chestmnist.npz", "chestmnist", 28)
    arrays = write_medmnist_npz(tmp_path / "good", "vesselmnist3d")
    arrays["train_images"] = arrays["train_images"][..., None]
    np.savez_compressed(tmp_path / "vesselmnist3d.npz", **arrays)
    with pytest.raises(
        medmnist.MedmnistFormatError,
        match=r"train_images has shape \[5, 28, 28, 28, 1\], expected \[N, 28, 28, 28\]",
    ):
        medmnist.check_npz(tmp_path / "vesselmnist3d.npz", "vesselmnist3d", 28)
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(
        medmnist.MedmnistFormatError, match="broken.npz: not a readable .npz"
    ):
        medmnist.check_npz(tmp_path / "broken.npz", "vesselmnist3d", 28)


def test_unknown_flag_or_size_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"data.flag='mnist': expected one of \['pathmnist'"
    ):
        medmnist.medmnist("mnist")
    with pytest.raises(ConfigError, match=r"data.size=128: expected one of \[28, 64\]"):
        medmnist.medmnist("nodulemnist3d", 128)
    with pytest.raises(ConfigError, match=r"expected one of \[28, 64, 128, 224\]"):
        medmnist.npz_filename("pathmnist", 32)


# Values read from medmnist/info.py of github.com/MedMNIST/MedMNIST (release 3.0.2,
# the one whose URLs point at Zenodo record 10519652).
OFFICIAL = {
    # flag: (task, channels, classes, train, val, test, first label, last label)
    "pathmnist": (
        "multi-class",
        3,
        9,
        89996,
        10004,
        7180,
        "adipose",
        "colorectal adenocarcinoma epithelium",
    ),
    "chestmnist": (
        "multi-label, binary-class",
        1,
        14,
        78468,
        11219,
        22433,
        "atelectasis",
        "hernia",
    ),
    "retinamnist": ("ordinal-regression", 3, 5, 1080, 120, 400, "0", "4"),
    "breastmnist": ("binary-class", 1, 2, 546, 78, 156, "malignant", "normal, benign"),
    "tissuemnist": (
        "multi-class",
        1,
        8,
        165466,
        23640,
        47280,
        "Collecting Duct, Connecting Tubule",
        "Thick Ascending Limb",
    ),
    "organamnist": ("multi-class", 1, 11, 34561, 6491, 17778, "bladder", "spleen"),
    "organmnist3d": ("multi-class", 1, 11, 971, 161, 610, "liver", "pancreas"),
    "synapsemnist3d": (
        "binary-class",
        1,
        2,
        1230,
        177,
        352,
        "inhibitory synapse",
        "excitatory synapse",
    ),
}


def test_info_table_matches_the_official_source():
    assert list(medmnist.INFO) == [
        "pathmnist",
        "chestmnist",
        "dermamnist",
        "octmnist",
        "pneumoniamnist",
        "retinamnist",
        "breastmnist",
        "bloodmnist",
        "tissuemnist",
        "organamnist",
        "organcmnist",
        "organsmnist",
        "organmnist3d",
        "nodulemnist3d",
        "adrenalmnist3d",
        "fracturemnist3d",
        "vesselmnist3d",
        "synapsemnist3d",
    ]
    for flag, (
        task,
        channels,
        classes,
        train,
        val,
        test,
        first,
        last,
    ) in OFFICIAL.items():
        info = medmnist.INFO[flag]
        assert medmnist.task_type(flag) == task, flag
        assert medmnist.num_channels(flag) == channels, flag
        assert medmnist.num_classes(flag) == classes, flag
        assert dict(info.num_samples) == {
            "train": train,
            "validation": val,
            "test": test,
        }
        assert (info.labels[0], info.labels[-1]) == (first, last), flag
    rgb = {flag for flag in medmnist.INFO if medmnist.num_channels(flag) == 3}
    assert rgb == {"pathmnist", "dermamnist", "retinamnist", "bloodmnist"}
    for flag, info in medmnist.INFO.items():
        assert info.task in medmnist.TASK_TYPES
        assert medmnist.spatial_dims(flag) == (3 if flag.endswith("3d") else 2)
        assert len(set(info.labels)) == len(info.labels)
    assert medmnist.is_multi_label("chestmnist")
    assert not any(
        medmnist.is_multi_label(f) for f in medmnist.INFO if f != "chestmnist"
    )


def test_file_names_and_sizes_follow_medmnist_plus():
    assert medmnist.npz_filename("pathmnist", 28) == "pathmnist.npz"
    assert medmnist.npz_filename("pathmnist", 224) == "pathmnist_224.npz"
    assert medmnist.npz_filename("fracturemnist3d", 64) == "fracturemnist3d_64.npz"
    assert medmnist.available_sizes("octmnist") == (28, 64, 128, 224)
    assert medmnist.available_sizes("adrenalmnist3d") == (28, 64)
    assert medmnist.npz_url("bloodmnist", 128) == (
        "https://zenodo.org/records/10519652/files/bloodmnist_128.npz?download=1"
    )
    assert len(medmnist.Medmnist.BUILDER_CONFIGS) == 12 * 4 + 6 * 2
    assert medmnist.image_shape("nodulemnist3d", 64) == (64, 64, 64, 1)


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
