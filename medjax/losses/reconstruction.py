"""Reconstruction losses (autoencoders, VAEs), per example (``[B]``), zero where
``mask`` is false."""

import jax.numpy as jnp


def reconstruction_error(
    reconstruction: jnp.ndarray, target: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean squared error per example over all voxels and channels.

    Args:
        reconstruction, target: ``[B, *S, C]``.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` float32; exactly 0 where ``mask`` is false.
    """
    error = jnp.square(reconstruction.astype(jnp.float32) - target.astype(jnp.float32))
    per_example = jnp.mean(error.reshape(error.shape[0], -1), axis=1)
    return per_example if mask is None else jnp.where(mask, per_example, 0.0)


def kl_divergence(
    mean: jnp.ndarray, log_variance: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """KL(N(mean, exp(log_variance)) || N(0, I)) per example, in nats, summed
    over the latent dimensions:
    ``0.5 * sum(exp(log_variance) + mean**2 - 1 - log_variance)``.

    Args:
        mean, log_variance: ``[B, L]``.
        mask: optional ``[B]`` bool.

    Returns:
        ``[B]`` float32; 0 where ``mask`` is false.
    """
    mean, log_variance = mean.astype(jnp.float32), log_variance.astype(jnp.float32)
    per_dim = 0.5 * (jnp.exp(log_variance) + jnp.square(mean) - 1.0 - log_variance)
    per_example = jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=1)
    return per_example if mask is None else jnp.where(mask, per_example, 0.0)
