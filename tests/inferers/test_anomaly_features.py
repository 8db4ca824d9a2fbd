"""Feature-based anomaly maps: nearest-neighbour distances against numpy brute
force, the memory bank, and the captured layer features."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.inferers.anomaly_features import (
    distance_maps,
    layer_features,
    memory_bank,
    nearest_distances,
)
from medjax.models.denoising_unet import denoising_unet_tiny
from medjax.runtime import random_key


def test_nearest_distances_equal_a_numpy_brute_force():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(1001, 7)).astype(np.float32)  # not a chunk multiple
    bank = rng.normal(size=(53, 7)).astype(np.float32)
    brute = np.sqrt(((queries[:, None, :] - bank[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest_distances(queries, bank, chunk=256), brute,
                               rtol=1e-4, atol=1e-4)
    # A query in the bank is at distance 0.
    assert nearest_distances(bank[3:4], bank)[0] == pytest.approx(0.0, abs=1e-3)
    maps = distance_maps(queries[:1000].reshape(10, 10, 10, 7), bank)
    np.testing.assert_allclose(maps.ravel(), brute[:1000], rtol=1e-4, atol=1e-4)


def test_the_memory_bank_draws_only_voxels_inside_without_replacement():
    features = np.arange(2 * 4 * 4 * 2, dtype=np.float32).reshape(2, 4, 4, 2)
    inside = np.zeros((2, 4, 4), bool)
    inside[0, :2] = True  # 8 voxels
    bank = memory_bank(features, inside, 5, seed=1)
    pool = features[inside]
    assert bank.shape == (5, 2)
    assert len({tuple(row) for row in bank}) == 5
    assert all(any(np.array_equal(row, p) for p in pool) for row in bank)
    np.testing.assert_array_equal(memory_bank(features, inside, 100), pool)


def test_layer_features_are_the_named_blocks_outputs_pooled_and_resized():
    model = denoising_unet_tiny(spatial_dims=2, conv_impl="xla")
    images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 1)), jnp.float32)
    variables = model.init(random_key(0), images, train=False)
    features = layer_features(model, variables, images, ["unet/down_0", "unet/down_1"],
                              pool=1)
    # tiny: base width 4, doubling: 4 channels at full resolution, 8 at half.
    assert features.shape == (2, 16, 16, 12)
    _, state = model.apply(variables, images, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    full = state["intermediates"]["unet"]["down_0"]["__call__"][0]
    np.testing.assert_allclose(features[..., :4], full, rtol=1e-6)
    pooled = layer_features(model, variables, images, ["unet/down_0"], pool=3)
    # An interior voxel: the mean of its 3 x 3 neighbourhood.
    np.testing.assert_allclose(pooled[0, 5, 7], full[0, 4:7, 6:9].mean((0, 1)), rtol=1e-5)
    with pytest.raises(ValueError, match="no submodule"):
        layer_features(model, variables, images, ["unet/down_9"])
