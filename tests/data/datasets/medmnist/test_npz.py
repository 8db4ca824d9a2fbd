"""Checking and reading official npz files (``medmnist/npz.py``)."""

import numpy as np
import pytest

from medjax.data import io
from medjax.data.datasets import medmnist
from medjax.errors import ConfigError
from tests.data.datasets.medmnist.files import write_medmnist_npz


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
