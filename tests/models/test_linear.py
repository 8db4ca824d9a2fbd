"""Linear regression in closed form against numpy and scikit-learn (gradient
descent: tests/engine/test_fit_arrays.py; MSE and R^2:
tests/metrics/test_regression.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import linear as regression


def _data(num_examples=203, num_features=5, noise=0.3, seed=0):
    """Correlated standardised-ish features and a noisy linear target."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(num_features) + 0.3 * rng.normal(size=(num_features, num_features))
    X = rng.normal(size=(num_examples, num_features)) @ mixing
    w = rng.normal(size=num_features)
    y = X @ w + 1.7 + noise * rng.normal(size=num_examples)
    return X.astype(np.float32), y.astype(np.float32)


def test_simple_linear_regression_by_hand():
    # Points on y = 2x + 1 except the last: mean x = 1.5, mean y = 4.5,
    # dx = (-1.5, -0.5, 0.5, 1.5), dy = (-3.5, -1.5, 0.5, 4.5):
    # sum dx dy = 5.25 + 0.75 + 0.25 + 6.75 = 13, sum dx^2 = 5, so a = 2.6 and
    # b = 4.5 - 2.6 * 1.5 = 0.6.
    a, b = regression.simple_linear_regression(
        jnp.array([0.0, 1.0, 2.0, 3.0]), jnp.array([1.0, 3.0, 5.0, 9.0])
    )
    assert float(a) == pytest.approx(2.6)
    assert float(b) == pytest.approx(0.6)


def test_simple_linear_regression_equals_polyfit():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 5, size=97)
    y = -0.8 * x + 2.5 + rng.normal(size=97)
    a, b = regression.simple_linear_regression(x.astype(np.float32), y.astype(np.float32))
    expected_a, expected_b = np.polyfit(x, y, deg=1)
    np.testing.assert_allclose([a, b], [expected_a, expected_b], rtol=1e-5, atol=1e-5)


def test_simple_linear_regression_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"x \[N\] and y \[N\]"):
        regression.simple_linear_regression(jnp.ones(3), jnp.ones(4))


def test_normal_equation_equals_lstsq():
    X, y = _data()
    w, b = regression.normal_equation(X, y)
    design = np.hstack([X, np.ones((len(X), 1), np.float32)]).astype(np.float64)
    expected = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w, expected[:-1], rtol=1e-4, atol=1e-5)
    assert float(b) == pytest.approx(expected[-1], abs=1e-5)


def test_normal_equation_without_intercept_equals_lstsq():
    X, y = _data(seed=2)
    w, b = regression.normal_equation(X, y, fit_intercept=False)
    expected = np.linalg.lstsq(X.astype(np.float64), y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-5)
    assert float(b) == 0.0


def test_normal_equation_one_feature_equals_simple_regression():
    X, y = _data(num_features=1, seed=3)
    w, b = regression.normal_equation(X, y)
    a, intercept = regression.simple_linear_regression(X[:, 0], y)
    np.testing.assert_allclose([w[0], b], [a, intercept], rtol=1e-5)


def test_ridge_equals_sklearn_and_shrinks():
    from sklearn.linear_model import Ridge

    X, y = _data(seed=4)
    w, b = regression.normal_equation(X, y, l2=25.0)
    reference = Ridge(alpha=25.0).fit(X.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(w, reference.coef_, rtol=1e-4, atol=1e-5)
    assert float(b) == pytest.approx(reference.intercept_, abs=1e-4)
    w_ols, _ = regression.normal_equation(X, y)
    assert np.linalg.norm(w) < np.linalg.norm(w_ols)


def test_normal_equation_rank_deficient_gives_minimum_norm():
    # A duplicated column: any split of its weight fits equally well; lstsq
    # gives the minimum-norm one, which shares it equally.
    rng = np.random.default_rng(5)
    x = rng.normal(size=50).astype(np.float32)
    X = np.stack([x, x], axis=1)
    w, b = regression.normal_equation(X, 3.0 * x + 1.0)
    np.testing.assert_allclose(w, [1.5, 1.5], rtol=1e-4)
    assert float(b) == pytest.approx(1.0, abs=1e-5)
