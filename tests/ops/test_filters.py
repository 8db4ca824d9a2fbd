"""Filters against scipy.ndimage."""

import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from medjax.ops.filters import gaussian_smooth


def test_gaussian_smooth_matches_scipy():
    maps = np.random.default_rng(0).random((2, 11, 13)).astype(np.float32)
    ours = gaussian_smooth(jnp.asarray(maps), 1.0)
    for i in range(2):
        np.testing.assert_allclose(
            ours[i], scipy.ndimage.gaussian_filter(maps[i], 1.0, mode="constant", truncate=3.0),
            atol=1e-6,
        )
    volume = np.zeros((1, 9, 9, 9), np.float32)
    volume[0, 4, 4, 4] = 1.0
    smoothed = gaussian_smooth(jnp.asarray(volume), 1.0)
    np.testing.assert_allclose(
        smoothed[0], scipy.ndimage.gaussian_filter(volume[0], 1.0, mode="constant", truncate=3.0),
        atol=1e-6,
    )
