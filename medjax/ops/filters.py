"""Filters of voxel maps, in JAX."""

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_smooth(maps: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """``maps [B, *S]`` (2D or 3D) blurred by a Gaussian of ``sigma`` voxels,
    separably, the kernel truncated at 3 sigma, zero outside the map
    (``scipy.ndimage.gaussian_filter`` with ``mode="constant"``, ``truncate=3``
    for integer sigma).

    Unlike ``medjax.augment``'s blur (edges extended, a traced sigma, channels),
    this one pads with zeros, which :func:`medjax.metrics.anomaly_maps` corrects by
    normalised convolution.

    Args:
        maps: ``[B, *S]`` floating point, 2 or 3 spatial axes.
        sigma: standard deviation in voxels, a static number (<= 0: no blur).

    Returns:
        ``[B, *S]``, the dtype of ``maps``.
    """
    if sigma <= 0:
        return maps
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), maps.dtype)
    ndim = maps.ndim - 1
    spec = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NHWDC", "HWDIO", "NHWDC")}[ndim]
    x = maps[..., None]
    for axis in range(ndim):
        shape = [1] * ndim + [1, 1]
        shape[axis] = len(taps)
        x = jax.lax.conv_general_dilated(
            x, taps.reshape(shape), (1,) * ndim, "SAME", dimension_numbers=spec
        )
    return x[..., 0]
