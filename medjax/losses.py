"""Per-example losses. Each returns one value per example and takes a validity
``mask`` so that padded examples contribute exactly zero; the task reduces them."""

import jax
import jax.numpy as jnp
import optax


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """Mean of ``values [B]`` over examples where ``mask [B]`` is true (0 if none)."""
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def softmax_cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    label_smoothing: float = 0.0,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Cross-entropy of ``logits [B, K]`` against integer ``labels [B]``; ``[B]``.

    With ``label_smoothing`` the one-hot target is mixed with the uniform
    distribution (optax.smooth_labels)."""
    if label_smoothing:
        targets = optax.smooth_labels(
            jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing
        )
        losses = optax.softmax_cross_entropy(logits, targets)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return losses if mask is None else jnp.where(mask, losses, 0.0)

