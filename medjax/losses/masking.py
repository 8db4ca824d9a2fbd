"""The reduction every task applies to per-example losses: a mean over the
valid examples of a batch."""

import jax.numpy as jnp


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Mean of ``values [B]`` over examples where ``mask [B]`` is true (0 if none)."""
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)

