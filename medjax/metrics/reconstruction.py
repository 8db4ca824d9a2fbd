"""Reconstruction metrics, device side: PSNR per example, and the anomaly maps
and per-image scores of reconstruction-based anomaly detection."""

import jax.numpy as jnp

from medjax.ops.filters import gaussian_smooth


def psnr(mse: jnp.ndarray, data_range: float = 2.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB of per-example ``mse [B]`` for images
    spanning ``data_range`` (2 for windowed CT in [-1, 1])."""
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10))


def anomaly_maps(
    image: jnp.ndarray, reconstruction: jnp.ndarray, sigma: float = 0.0
) -> jnp.ndarray:
    """Per-voxel squared reconstruction error summed over channels, optionally
    Gaussian-smoothed (lesions are blobs, noise is not).

    Args:
        image, reconstruction: ``[B, *S, C]``.
        sigma: smoothing in voxels (0: none).

    Returns:
        ``[B, *S]`` float32.
    """
    error = jnp.sum(jnp.square(image.astype(jnp.float32) - reconstruction), axis=-1)
    return smooth_maps(error, sigma)


def smooth_maps(maps: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """Anomaly ``maps [B, *S]`` of any method Gaussian-smoothed by ``sigma``
    voxels (0: as they are), by normalised convolution: the zero padding would
    otherwise dim the borders."""
    if sigma <= 0:
        return maps
    return gaussian_smooth(maps, sigma) / gaussian_smooth(jnp.ones_like(maps[:1]), sigma)


def anomaly_scores(
    maps: jnp.ndarray, body: jnp.ndarray | None = None, quantile: float | None = None
) -> jnp.ndarray:
    """Per-image anomaly score ``[B]`` of ``maps [B, *S]``: the mean (``quantile``
    None) or the ``quantile`` of the map over the voxels where ``body [B, *S]``
    is true (all voxels when None, or when an image has no body voxel)."""
    flat = maps.reshape(maps.shape[0], -1)
    if body is None:
        inside = jnp.ones_like(flat, bool)
    else:
        inside = body.reshape(flat.shape)
        inside = inside | ~inside.any(axis=1, keepdims=True)
    if quantile is None:
        return jnp.sum(jnp.where(inside, flat, 0.0), 1) / jnp.sum(inside, 1)
    return jnp.nanquantile(jnp.where(inside, flat, jnp.nan), quantile, axis=1)
