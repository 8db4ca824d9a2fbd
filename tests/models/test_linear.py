"""Linear regression: closed forms against numpy, gradient descent against the
closed form, and the metrics against hand-computed values and scikit-learn."""

from functools import partial

import jax.numpy as jnp
import numpy as np
import optax
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


@pytest.mark.parametrize(
    "optimizer, lr, steps",
    [(optax.sgd, 0.1, 3000), (partial(optax.sgd, momentum=0.9), 0.05, 800),
     (optax.adam, 0.05, 3000)],
    ids=["sgd", "momentum", "adam"],
)
def test_gradient_descent_converges_to_normal_equation(optimizer, lr, steps):
    X, y = _data()
    w_closed, b_closed = regression.normal_equation(X, y)
    mse_closed = regression.mean_squared_error(y, regression.predict(X, w_closed, b_closed))
    w, b, losses = regression.fit_by_gradient_descent(
        X, y, lr=lr, steps=steps, optimizer=optimizer
    )
    assert losses.shape == (steps,)
    # Starts at the MSE of w = 0, b = 0, and ends at the closed form's minimum.
    assert float(losses[0]) == pytest.approx(float(np.mean(y.astype(np.float64) ** 2)), rel=1e-5)
    assert float(losses[-1]) == pytest.approx(float(mse_closed), rel=1e-4)
    np.testing.assert_allclose(w, w_closed, atol=2e-3)
    assert float(b) == pytest.approx(float(b_closed), abs=2e-3)


def test_gradient_descent_sgd_loss_decreases_monotonically():
    # Below 1/lambda_max of the Hessian, every plain gradient step lowers the loss.
    X, y = _data(seed=6)
    _, _, losses = regression.fit_by_gradient_descent(X, y, lr=0.05, steps=300)
    assert np.all(np.diff(np.asarray(losses)) <= 1e-6)
    assert losses[-1] < 0.1 * losses[0]


def test_gradient_descent_without_intercept_and_from_init():
    X, y = _data(seed=7)
    w_closed, _ = regression.normal_equation(X, y, fit_intercept=False)
    w, b, _ = regression.fit_by_gradient_descent(
        X, y, lr=0.1, steps=3000, fit_intercept=False, init=(jnp.ones(5), 0.0)
    )
    np.testing.assert_allclose(w, w_closed, atol=2e-3)
    assert float(b) == 0.0


def test_mean_squared_error_by_hand_and_masked():
    y_true = jnp.array([1.0, 2.0, 3.0, 100.0])
    y_pred = jnp.array([2.0, 2.0, 1.0, 0.0])
    assert float(regression.mean_squared_error(y_true[:3], y_pred[:3])) == pytest.approx(5 / 3)
    mask = jnp.array([True, True, True, False])  # the padded last one counts zero
    assert float(regression.mean_squared_error(y_true, y_pred, mask=mask)) == pytest.approx(5 / 3)


def test_r2_score_equals_sklearn():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(8)
    y_true = rng.normal(size=41)
    y_pred = y_true + 0.5 * rng.normal(size=41)
    assert float(regression.r2_score(y_true, y_pred)) == pytest.approx(
        r2_score(y_true, y_pred), rel=1e-5
    )
    # The mean predictor scores 0; a perfect one 1; padding is ignored.
    assert float(regression.r2_score(y_true, np.full(41, y_true.mean()))) == pytest.approx(0, abs=1e-6)
    padded_true = np.append(y_true, 1e3)
    padded_pred = np.append(y_true, -1e3)
    mask = np.arange(42) < 41
    assert float(regression.r2_score(padded_true, padded_pred, mask=mask)) == pytest.approx(1.0)
