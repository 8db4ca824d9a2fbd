"""Classification losses, per example (``[B]``), zero where ``mask`` is false."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


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


def balanced_class_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """``N / (K n_k)`` for class counts ``n_k`` (scikit-learn's "balanced"): every
    class then carries the same total weight, and the mean weight over the
    training set is 1. Absent classes get weight 0."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return tuple(float(w) for w in weights)
