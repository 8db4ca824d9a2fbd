"""Noise fields for denoising autoencoders, in JAX."""

import jax
import jax.numpy as jnp


def coarse_noise(
    key: jax.Array,
    shape: tuple[int, ...],
    resolution: int | tuple[int, ...],
    std: float = 1.0,
    dtype=jnp.float32,
) -> jnp.ndarray:
    """Low-frequency Gaussian noise (Kascenas et al., MIDL 2022): i.i.d.
    N(0, std**2) values on a coarse grid, linearly interpolated to ``shape``.

    About 90% of its power lies below the coarse grid's Nyquist frequency,
    ``resolution / 2`` cycles per image side, on every axis (the rest is the
    linear interpolation's leakage; ``tests/ops/test_noise.py`` measures it);
    between grid points the interpolation lowers the standard deviation
    (about 0.68 ``std`` on average over a 4x-upsampled 2D image). A
    denoising autoencoder trained to remove it must learn blob-sized
    structure, the scale of lesions, rather than pixel noise.

    Args:
        key: PRNG key.
        shape: ``[B, *S, C]`` of the images the noise is added to.
        resolution: coarse grid points per spatial axis (one number for all,
            or one per axis); each must not exceed the image's size.
        std: standard deviation of the grid values.
        dtype: of the result.

    Returns:
        ``shape`` array; each image and channel has its own noise.
    """
    spatial = tuple(shape[1:-1])
    if isinstance(resolution, int):
        resolution = (resolution,) * len(spatial)
    resolution = tuple(int(r) for r in resolution)
    if len(resolution) != len(spatial) or any(
        not 1 <= r <= s for r, s in zip(resolution, spatial)
    ):
        raise ValueError(
            f"coarse_noise: resolution {resolution} must give 1..size points on "
            f"each of the spatial axes {spatial}"
        )
    grid = jax.random.normal(key, (shape[0], *resolution, shape[-1]), jnp.float32)
    noise = jax.image.resize(grid, shape, method="linear")
    return (std * noise).astype(dtype)
