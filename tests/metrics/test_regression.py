"""Regression metrics against hand-computed values and scikit-learn."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax import metrics


def test_mean_squared_error_by_hand_and_masked():
    y_true = jnp.array([1.0, 2.0, 3.0, 100.0])
    y_pred = jnp.array([2.0, 2.0, 1.0, 0.0])
    assert float(metrics.mean_squared_error(y_true[:3], y_pred[:3])) == pytest.approx(5 / 3)
    mask = jnp.array([True, True, True, False])  # the padded last one counts zero
    assert float(metrics.mean_squared_error(y_true, y_pred, mask=mask)) == pytest.approx(5 / 3)


def test_r2_score_equals_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(8)
    y_true = rng.normal(size=41)
    y_pred = y_true + 0.5 * rng.normal(size=41)
    assert float(metrics.r2_score(y_true, y_pred)) == pytest.approx(
        r2_score(y_true, y_pred), rel=1e-5
    )
    # The mean predictor scores 0; a perfect one 1; padding is ignored.
    assert float(metrics.r2_score(y_true, np.full(41, y_true.mean()))) == pytest.approx(0, abs=1e-6)
    padded_true = np.append(y_true, 1e3)
    padded_pred = np.append(y_true, -1e3)
    mask = np.arange(42) < 41
    assert float(metrics.r2_score(padded_true, padded_pred, mask=mask)) == pytest.approx(1.0)
