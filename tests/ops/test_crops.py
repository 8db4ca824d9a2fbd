import jax.numpy as jnp
import numpy as np
import pytest

from medjax.ops import crops
from medjax.runtime import random_key


def test_extract_patches_equals_numpy_slicing_2d_and_3d():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 9, 11, 2)).astype(np.float32)
    corners = np.array([[0, 0], [4, 6], [2, 3]])
    got = crops.extract_patches(jnp.asarray(images), jnp.asarray(corners), (5, 5))
    for b, (r, c) in enumerate(corners):
        np.testing.assert_array_equal(got[b], images[b, r:r + 5, c:c + 5])
    volumes = rng.integers(0, 5, size=(2, 7, 8, 9))
    corners = np.array([[1, 2, 3], [4, 0, 5]])
    got = crops.extract_patches(jnp.asarray(volumes), jnp.asarray(corners), (3, 4, 4))
    for b, (i, j, k) in enumerate(corners):
        np.testing.assert_array_equal(got[b], volumes[b, i:i + 3, j:j + 4, k:k + 4])


def test_corners_keep_patches_inside_the_image():
    labels = jnp.zeros((64, 13, 10), jnp.int32).at[:, 12, 9].set(1)  # corner voxel
    corners = crops.sample_patch_corners(
        random_key(0), labels, (5, 4), num_classes=2, foreground_fraction=0.5
    )
    corners = np.asarray(corners)
    assert corners.min() >= 0
    assert (corners[:, 0] <= 13 - 5).all() and (corners[:, 1] <= 10 - 4).all()


def _holds(labels, corners, size, value):
    return np.array([
        (np.asarray(l)[r:r + size[0], c:c + size[1]] == value).any()
        for l, (r, c) in zip(labels, np.asarray(corners))
    ])


def test_foreground_fraction_one_always_holds_foreground_and_zero_is_uniform():
    # One foreground voxel in a 40 x 40 image: a uniform 8 x 8 patch holds it with
    # probability about (8/33)^2 = 0.06; a foreground-centred one always does.
    labels = jnp.zeros((256, 40, 40), jnp.int32).at[:, 20, 30].set(1)
    always = crops.sample_patch_corners(
        random_key(1), labels, (8, 8), num_classes=2, foreground_fraction=1.0
    )
    assert _holds(labels, always, (8, 8), 1).all()
    never = crops.sample_patch_corners(
        random_key(1), labels, (8, 8), num_classes=2, foreground_fraction=0.0
    )
    assert _holds(labels, never, (8, 8), 1).mean() < 0.2
    third = crops.sample_patch_corners(
        random_key(2), labels, (8, 8), num_classes=2, foreground_fraction=1 / 3
    )
    share = _holds(labels, third, (8, 8), 1).mean()
    assert 0.25 < share < 0.5  # 1/3 + 2/3 * 0.06 = 0.37 expected


def test_small_classes_are_drawn_as_often_as_large_ones():
    # Class 1 fills half the image, class 2 is a single voxel: a class is drawn
    # first, so about half of the foreground patches hold the single voxel.
    labels = np.zeros((400, 32, 32), np.int32)
    labels[:, :16] = 1
    labels[:, 28, 28] = 2
    corners = crops.sample_patch_corners(
        random_key(3), jnp.asarray(labels), (4, 4), num_classes=3,
        foreground_fraction=1.0,
    )
    share = _holds(labels, corners, (4, 4), 2).mean()
    assert 0.4 < share < 0.6


def test_examples_without_foreground_get_uniform_patches():
    labels = jnp.zeros((200, 20, 20), jnp.int32)
    corners = np.asarray(crops.sample_patch_corners(
        random_key(4), labels, (5, 5), num_classes=4, foreground_fraction=1.0
    ))
    assert corners.min() == 0 and corners.max() == 15
    assert len(np.unique(corners[:, 0])) > 10


def test_patch_larger_than_image_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        crops.sample_patch_corners(
            random_key(0), jnp.zeros((1, 8, 8), jnp.int32), (9, 4), num_classes=2
        )
