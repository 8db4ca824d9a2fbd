"""Linear regression in closed form: the seed lecture's formulas for one
feature, the normal equation for many. Pure functions of arrays; imports no other
medjax code.

The model is ``y_hat = X @ w + b``. Both minimise the mean squared error

    MSE(w, b) = mean_i (y_i - x_i . w - b)^2

(``medjax.metrics.regression``), as does gradient descent on it
(``medjax.engine.fit_arrays.fit_by_gradient_descent``), which converges (for a
small enough learning rate) to the closed-form solution;
``tests/models/test_linear.py`` checks that, and checks the closed forms against
``numpy.polyfit`` and ``numpy.linalg.lstsq``.
"""

import jax.numpy as jnp


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


def predict(X: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """``X [N, D] @ w [D] + b`` -> ``[N]``."""
    return jnp.asarray(X) @ w + b
