"""Tiny npz files in the official MedMNIST layout (``<flag>[_<size>].npz`` with
uint8 ``{train,val,test}_{images,labels}``), for the MedMNIST tests and the
config and CLI tests that build a MedMNIST run."""

import os

import numpy as np

from medjax.data.datasets import medmnist

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
