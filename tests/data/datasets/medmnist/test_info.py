"""The ``INFO`` table and its accessors (``medmnist/info.py``) against MedMNIST's
own source."""

import pytest

from medjax.data.datasets import medmnist
from medjax.errors import ConfigError


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
