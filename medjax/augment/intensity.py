"""The intensity part of augmentation, for ``image`` fields only, after the
geometry, in this order: multiplicative rescale, additive shift, gamma, Gaussian
blur, Gaussian noise.

A sequence ``[T, *S, C]`` (an image field with a ``time`` axis) draws each part
once for all its frames: one factor, offset, gamma (of the whole sequence's
per-channel range), blur width and noise std. The noise itself is drawn per
voxel of every frame, as a scanner's noise would be.
"""

import math

import dm_pix
import jax
import jax.numpy as jnp

from medjax.augment import draws

# The Gaussian blur kernel reaches this many sigmas (of the largest sigma) out.
_BLUR_TRUNCATE = 3.0


def augment_image(
    settings, part_keys: dict, index: int, image: jnp.ndarray, *, time: bool
) -> jnp.ndarray:
    """Rescale, shift, gamma, blur, noise of one image field.

    Args:
        settings: the :class:`medjax.augment.Augmentation`.
        part_keys: ``{part: key}`` of this example.
        index: the field's position among the example's image fields; each image
            field draws its own parameters (sub-keys folded with ``index``).
        image: ``[*S, C]`` (``[T, *S, C]`` with ``time``) floating point.
        time: the image has a leading time axis.

    Returns:
        The image, same shape and dtype; parts whose probability is 0 are not
        traced.
    """
    dtype = image.dtype

    def draw(part, probability):
        return draws.coin(jax.random.fold_in(part_keys[part], index), probability)

    if settings.scale_probability > 0.0:
        coin, value_key = draw("scale", settings.scale_probability)
        factor = draws.uniform(value_key, settings.scale_range).astype(dtype)
        image = jnp.where(coin, image * factor, image)
    if settings.shift_probability > 0.0:
        coin, value_key = draw("shift", settings.shift_probability)
        offset = draws.uniform(value_key, settings.shift_range).astype(dtype)
        image = jnp.where(coin, image + offset, image)
    if settings.gamma_probability > 0.0:
        coin, value_key = draw("gamma", settings.gamma_probability)
        gamma = draws.uniform(value_key, settings.gamma_range).astype(dtype)
        image = jnp.where(coin, adjust_gamma(image, gamma), image)
    if settings.blur_probability > 0.0:
        coin, value_key = draw("blur", settings.blur_probability)
        sigma = draws.uniform(value_key, settings.blur_sigma_range)
        radius = math.ceil(_BLUR_TRUNCATE * settings.blur_sigma_range[1])

        def blur(frame):
            return gaussian_blur(frame, sigma, radius=radius)

        blurred = (jax.vmap(blur)(image) if time else blur(image)).astype(dtype)
        image = jnp.where(coin, blurred, image)
    if settings.noise_probability > 0.0:
        coin, value_key = draw("noise", settings.noise_probability)
        std_key, noise_key = jax.random.split(value_key)
        std = draws.uniform(std_key, settings.noise_std_range)
        noise = std * jax.random.normal(noise_key, image.shape)
        image = jnp.where(coin, image + noise.astype(dtype), image)
    return image


def adjust_gamma(image: jnp.ndarray, gamma: jnp.ndarray | float) -> jnp.ndarray:
    """Gamma of each channel's min-max range: ``lo + (hi - lo) * u ** gamma``.

    Args:
        image: ``[..., C]`` floating point; the range is taken over every axis but
            the last (all frames of a sequence together).
        gamma: scalar exponent (> 0), may be traced.

    Returns:
        ``[..., C]``, with ``u = (image - lo) / (hi - lo)`` per channel; a constant
        channel is returned unchanged.
    """
    axes = tuple(range(image.ndim - 1))
    low = image.min(axis=axes, keepdims=True)
    span = image.max(axis=axes, keepdims=True) - low
    safe_span = jnp.where(span > 0, span, 1.0)
    adjusted = low + safe_span * dm_pix.adjust_gamma((image - low) / safe_span, gamma)
    return jnp.where(span > 0, adjusted, image)


def gaussian_blur(
    image: jnp.ndarray, sigma: jnp.ndarray | float, *, radius: int
) -> jnp.ndarray:
    """Isotropic Gaussian blur of ``[*S, C]``, edges extended by their nearest value.

    Matches ``scipy.ndimage.gaussian_filter(image, (sigma,) * ndim + (0,),
    mode="nearest", radius=radius)``.

    Args:
        image: ``[*S, C]`` floating point, 2 or 3 spatial axes.
        sigma: standard deviation in voxels (> 0), may be traced.
        radius: kernel half-width in voxels (static).

    Returns:
        ``[*S, C]``.
    """
    ndim = image.ndim - 1
    # Edge padding + VALID convolution: zero padding would darken the borders.
    padded = jnp.pad(image, [(radius, radius)] * ndim + [(0, 0)], mode="edge")
    if ndim == 2:
        return dm_pix.gaussian_blur(padded, sigma, 2 * radius + 1, padding="VALID")
    # Hand-written for 3D (dm_pix blurs 2D images only): the Gaussian separates,
    # so one 1-D jax.scipy convolution per axis is exact.
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(image.dtype)
    blurred = padded
    for axis in range(ndim):
        shape = [1] * image.ndim
        shape[axis] = 2 * radius + 1
        blurred = jax.scipy.signal.convolve(
            blurred, kernel.reshape(shape), mode="valid", method="direct"
        )
    return blurred
