import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from medjax.ops import displacement as dense_fields
from medjax.data.datasets.phantoms.registration_pairs import registration_pair
from medjax.runtime import random_key


def blob_image(shape, center, radius):
    grids = np.indices(shape)
    inside = sum((g - c) ** 2 for g, c in zip(grids, center)) <= radius**2
    return inside


@pytest.mark.parametrize("shape", [(33, 29), (19, 17, 15)])
def test_moving_is_fixed_under_the_returned_transform(shape):
    key = random_key(3)
    image = jax.random.normal(random_key(0), (*shape, 1))
    pair = registration_pair(key, image, elastic_magnitude=1.5)
    np.testing.assert_allclose(
        pair["moving"], dense_fields.warp_displacement(image, pair["displacement"], cval=float(image.min())),
        atol=1e-6,
    )
    # the total field is the affine part followed by the elastic part
    affine_only = registration_pair(key, image, elastic_magnitude=0.0)
    np.testing.assert_allclose(
        affine_only["displacement"],
        dense_fields.affine_to_displacement(affine_only["affine"], shape), atol=1e-4,
    )
    assert jnp.all(dense_fields.jacobian_determinant(pair["displacement"]) > 0)  # no folding


def test_zero_ranges_give_the_identity():
    image = jax.random.normal(random_key(0), (21, 23, 2))
    pair = registration_pair(
        random_key(1), image, max_rotation_degrees=0, max_translation=0,
        zoom_range=(1, 1), max_shear=0, elastic_magnitude=0,
    )
    np.testing.assert_allclose(pair["moving"], image, atol=1e-5)
    np.testing.assert_allclose(pair["affine"], np.eye(3), atol=1e-6)


@pytest.mark.parametrize("shape, center", [((41, 37), (18.0, 20.0)), ((23, 25, 21), (11.0, 12.0, 9.0))])
def test_points_follow_the_masks(shape, center):
    mask = blob_image(shape, center, 4)
    pair = registration_pair(
        random_key(7), jnp.asarray(mask, jnp.float32)[..., None],
        masks={"blob": jnp.asarray(mask, jnp.int32)}, points=jnp.array([center]),
        max_rotation_degrees=20, max_translation=0.08, elastic_magnitude=1.0,
    )
    moved = np.asarray(pair["moving_blob"])
    assert set(np.unique(moved)) <= {0, 1}
    np.testing.assert_allclose(ndi.center_of_mass(moved), pair["moving_points"][0], atol=0.75)
    np.testing.assert_array_equal(pair["fixed_blob"], mask)


def test_same_key_same_pair_and_vmap():
    images = jax.random.normal(random_key(0), (3, 16, 18, 1))
    keys = jax.random.split(random_key(5), 3)
    batched = jax.jit(jax.vmap(lambda k, x: registration_pair(k, x)["moving"]))(keys, images)
    for i in range(3):
        np.testing.assert_allclose(batched[i], registration_pair(keys[i], images[i])["moving"], atol=1e-5)
    assert not np.allclose(batched[0], registration_pair(keys[1], images[0])["moving"])
