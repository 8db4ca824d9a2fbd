"""Regression metrics over valid examples: mean squared error and the
coefficient of determination."""

import jax.numpy as jnp


def mean_squared_error(
    y_true: jnp.ndarray, y_pred: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean of ``(y_true - y_pred)^2`` over the examples where ``mask`` is true.

    Args:
        y_true: targets ``[N]``.
        y_pred: predictions ``[N]``.
        mask: optional validity ``[N]`` (bool); padded examples count zero.

    Returns:
        A scalar (0 if no example is valid).
    """
    squared = jnp.square(jnp.asarray(y_true) - jnp.asarray(y_pred))
    if mask is None:
        return jnp.mean(squared)
    mask = jnp.asarray(mask, squared.dtype)
    return jnp.sum(squared * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def r2_score(
    y_true: jnp.ndarray, y_pred: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Coefficient of determination ``1 - SS_res / SS_tot`` over valid examples
    (as ``sklearn.metrics.r2_score``): 1 is a perfect fit, 0 is no better than
    predicting the mean of ``y_true``.

    Args:
        y_true: targets ``[N]``.
        y_pred: predictions ``[N]``.
        mask: optional validity ``[N]`` (bool).

    Returns:
        A scalar.
    """
    y_true = jnp.asarray(y_true)
    mask = jnp.ones(y_true.shape, bool) if mask is None else jnp.asarray(mask, bool)
    weights = mask.astype(y_true.dtype)
    mean = jnp.sum(y_true * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    residual = jnp.sum(jnp.square(y_true - jnp.asarray(y_pred)) * weights)
    total = jnp.sum(jnp.square(y_true - mean) * weights)
    return 1.0 - residual / total
