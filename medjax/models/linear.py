"""Linear regression three ways: the seed lecture's closed form for one feature,
the normal equation for many, and gradient descent with optax on the same mean
squared error. Pure functions of arrays; imports no other medjax code.

The model is ``y_hat = X @ w + b``. All three minimise the same loss,

    MSE(w, b) = mean_i (y_i - x_i . w - b)^2,

so gradient descent started anywhere converges (for a small enough learning rate)
to the closed-form solution; ``tests/test_regression.py`` checks that, and checks
the closed forms against ``numpy.polyfit`` and ``numpy.linalg.lstsq``.
"""

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import optax


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


def simple_linear_regression(
    x: jnp.ndarray, y: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Least-squares line ``y = a x + b`` through points ``(x_i, y_i)``, by the
    seed lecture's formulas::

        a = sum((x - mean x)(y - mean y)) / sum((x - mean x)^2)
        b = mean y - a mean x

    (the slope is cov(x, y) / var(x); the line passes through the centroid).

    Args:
        x: feature ``[N]``, not all equal.
        y: target ``[N]``.

    Returns:
        ``(a, b)``: slope and intercept, scalars.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"simple_linear_regression: expected x [N] and y [N], got {x.shape} "
            f"and {y.shape}"
        )
    x_centred, y_centred = x - x.mean(), y - y.mean()
    a = jnp.sum(x_centred * y_centred) / jnp.sum(jnp.square(x_centred))
    b = y.mean() - a * x.mean()
    return a, b


def normal_equation(
    X: jnp.ndarray, y: jnp.ndarray, *, fit_intercept: bool = True, l2: float = 0.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Weights minimising ``mean((y - X w - b)^2) + l2 |w|^2 / N`` in closed form.

    The textbook solution is the normal equation ``(X^T X + l2 I) w = X^T y``.
    Forming ``X^T X`` squares the condition number of ``X`` (correlated
    features lose about twice as many digits, which matters in float32), so this
    solves the equivalent least-squares problem with ``jnp.linalg.lstsq`` (SVD)
    instead: ``min |X w - y|^2`` for ``l2 = 0``, and for ridge the augmented system
    ``[X; sqrt(l2) I] w ~ [y; 0]``, whose normal equation is the one above. A
    rank-deficient ``X`` (e.g. a duplicated feature) gives the minimum-norm ``w``.

    The intercept is fitted by centring: ``w`` is solved on ``X - mean X`` and
    ``y - mean y`` and then ``b = mean y - (mean X) . w``, which is exact for
    ordinary least squares and leaves the intercept unpenalised for ridge.

    Args:
        X: features ``[N, D]``.
        y: targets ``[N]``.
        fit_intercept: False forces ``b = 0``.
        l2: ridge penalty (>= 0) on ``w``, in the units of ``sum((y - X w)^2)``
            (as ``sklearn.linear_model.Ridge(alpha=l2)``).

    Returns:
        ``(w [D], b)``.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            f"normal_equation: expected X [N, D] and y [N], got {X.shape} and {y.shape}"
        )
    if l2 < 0:
        raise ValueError(f"normal_equation: expected l2 >= 0, got {l2}")
    if fit_intercept:
        X_mean, y_mean = X.mean(axis=0), y.mean()
        X, y = X - X_mean, y - y_mean
    if l2 > 0:
        num_features = X.shape[1]
        X = jnp.concatenate([X, jnp.sqrt(l2) * jnp.eye(num_features, dtype=X.dtype)])
        y = jnp.concatenate([y, jnp.zeros(num_features, y.dtype)])
    w = jnp.linalg.lstsq(X, y)[0]
    b = y_mean - X_mean @ w if fit_intercept else jnp.zeros((), w.dtype)
    return w, b


@partial(jax.jit, static_argnames=("steps", "optimizer", "fit_intercept"))
def _descend(X, y, w0, b0, lr, *, steps, optimizer, fit_intercept):
    tx = optimizer(lr)
    params = {"w": w0, "b": b0}

    def loss_fn(params):
        b = params["b"] if fit_intercept else 0.0
        return mean_squared_error(y, X @ params["w"] + b)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = jax.lax.scan(
        step, (params, tx.init(params)), None, length=steps
    )
    return params["w"], params["b"], losses


def fit_by_gradient_descent(
    X: jnp.ndarray,
    y: jnp.ndarray,
    *,
    lr: float,
    steps: int,
    optimizer: Callable[[float], optax.GradientTransformation] = optax.sgd,
    fit_intercept: bool = True,
    init: tuple[jnp.ndarray, jnp.ndarray] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Full-batch gradient descent on the mean squared error: ``steps`` optax
    updates in one jitted ``jax.lax.scan``.

    Plain SGD (``optax.sgd``, the default) is the seed's ``x_{n+1} = x_n - lr
    grad``; it converges to :func:`normal_equation`'s solution when ``lr`` is
    below ``1 / lambda_max`` of ``X^T X / N`` (with the intercept, of the centred
    features' matrix and 1), at a rate set by the condition number, so
    standardise the features first. ``optax.adam`` and the like work too.

    Args:
        X: features ``[N, D]``.
        y: targets ``[N]``.
        lr: learning rate.
        steps: number of updates.
        optimizer: ``lr -> optax.GradientTransformation`` (``optax.sgd``,
            ``optax.adam``, or a ``functools.partial`` of one); hashable.
        fit_intercept: False keeps ``b = 0``.
        init: starting ``(w [D], b)``; zeros by default.

    Returns:
        ``(w [D], b, losses [steps])``: the final parameters, and the MSE of the
        parameters before each update (``losses[0]`` is the MSE at ``init``).
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            "fit_by_gradient_descent: expected X [N, D] and y [N], got "
            f"{X.shape} and {y.shape}"
        )
    if steps < 1:
        raise ValueError(f"fit_by_gradient_descent: expected steps >= 1, got {steps}")
    dtype = jnp.result_type(X.dtype, y.dtype, jnp.float32)
    X, y = X.astype(dtype), y.astype(dtype)
    if init is None:
        w0, b0 = jnp.zeros(X.shape[1], dtype), jnp.zeros((), dtype)
    else:
        w0, b0 = jnp.asarray(init[0], dtype), jnp.asarray(init[1], dtype)
    return _descend(
        X, y, w0, b0, lr, steps=steps, optimizer=optimizer, fit_intercept=fit_intercept
    )


def predict(X: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """``X [N, D] @ w [D] + b`` -> ``[N]``."""
    return jnp.asarray(X) @ w + b
