"""Detection losses, per example: CenterNet's penalty-reduced focal loss on a
centre heatmap and an L1 loss read at object centres only.

Conventions as the other loss modules: one value per example ``[B]``, padded
examples zeroed through ``mask [B]``. Imports no medjax code.
"""

import jax
import jax.numpy as jnp


def penalty_reduced_focal_loss(
    logits: jnp.ndarray,
    target: jnp.ndarray,
    *,
    mask: jnp.ndarray | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
) -> jnp.ndarray:
    """CenterNet's (Zhou et al. 2019, eq. 1; CornerNet's) focal loss on a
    Gaussian-splatted heatmap, per example.

    With ``p = sigmoid(logits)`` and ``y = target``:
    ``-(sum_{y=1} (1-p)^alpha log p + sum_{y<1} (1-y)^beta p^alpha log(1-p)) / N``
    where ``N`` is the number of voxels with ``y == 1`` (the objects' centres),
    at least 1. ``log p`` and ``log(1 - p)`` are log-sigmoids (CenterNet's code
    clips ``p`` to [1e-4, 1 - 1e-4] instead).

    Args:
        logits: ``[B, *S, C]`` heatmap logits.
        target: ``[B, *S, C]`` in [0, 1], 1 exactly at the centres.
        mask: ``[B]`` valid examples.
        alpha, beta: the focusing and penalty-reduction exponents.

    Returns:
        ``[B]``.
    """
    logits = logits.astype(jnp.float32)
    target = target.astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    positive = target >= 1.0
    log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    pos = jnp.where(positive, (1 - p) ** alpha * log_p, 0.0)
    neg = jnp.where(positive, 0.0, (1 - target) ** beta * p**alpha * log_not_p)
    axes = tuple(range(1, logits.ndim))
    count = jnp.maximum(jnp.sum(positive, axis=axes), 1)
    loss = -(jnp.sum(pos, axis=axes) + jnp.sum(neg, axis=axes)) / count
    return loss if mask is None else jnp.where(mask, loss, 0.0)


def l1_at_points(
    predicted: jnp.ndarray,
    target: jnp.ndarray,
    valid: jnp.ndarray,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Mean absolute error over the valid objects and their components
    (CenterNet's ``RegL1Loss``: divided by objects x components, at least 1).

    Args:
        predicted: ``[B, N, D]`` regression outputs gathered at the centres.
        target: ``[B, N, D]``.
        valid: ``[B, N]`` bool.
        mask: ``[B]`` valid examples.

    Returns:
        ``[B]``.
    """
    error = jnp.abs(predicted.astype(jnp.float32) - target.astype(jnp.float32))
    error = jnp.where(valid[..., None], error, 0.0)
    count = jnp.maximum(jnp.sum(valid, axis=-1) * predicted.shape[-1], 1)
    loss = jnp.sum(error, axis=(-2, -1)) / count
    return loss if mask is None else jnp.where(mask, loss, 0.0)
