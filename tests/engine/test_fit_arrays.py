"""The in-memory fit loop: linear regression by gradient descent reaches the
normal equation's solution; minibatch orders draw what they say; the same key
gives the same result; state threads through the steps."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax import metrics
from medjax.engine.fit_arrays import fit_arrays, fit_by_gradient_descent
from medjax.models import linear
from medjax.runtime import random_key
from tests.models.test_linear import _data



@pytest.mark.parametrize(
    "optimizer, lr, steps",
    [(optax.sgd, 0.1, 3000), (partial(optax.sgd, momentum=0.9), 0.05, 800),
     (optax.adam, 0.05, 3000)],
    ids=["sgd", "momentum", "adam"],
)
def test_gradient_descent_converges_to_normal_equation(optimizer, lr, steps):
    X, y = _data()
    w_closed, b_closed = linear.normal_equation(X, y)
    mse_closed = metrics.mean_squared_error(y, linear.predict(X, w_closed, b_closed))
    w, b, losses = fit_by_gradient_descent(
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
    _, _, losses = fit_by_gradient_descent(X, y, lr=0.05, steps=300)
    assert np.all(np.diff(np.asarray(losses)) <= 1e-6)
    assert losses[-1] < 0.1 * losses[0]


def test_gradient_descent_without_intercept_and_from_init():
    X, y = _data(seed=7)
    w_closed, _ = linear.normal_equation(X, y, fit_intercept=False)
    w, b, _ = fit_by_gradient_descent(
        X, y, lr=0.1, steps=3000, fit_intercept=False, init=(jnp.ones(5), 0.0)
    )
    np.testing.assert_allclose(w, w_closed, atol=2e-3)
    assert float(b) == 0.0


def _squared_error(params, batch, key):
    X, y = batch
    return jnp.mean(jnp.square(X @ params["w"] + params["b"] - y))


@pytest.mark.parametrize("order", ["random", "epochs"])
def test_minibatch_sgd_reaches_the_normal_equation(order):
    X, y = _data()
    w_closed, b_closed = linear.normal_equation(X, y)
    # Minibatch gradients are noisy at the minimum: the rate drops at the end.
    tx = optax.sgd(optax.piecewise_constant_schedule(0.1, {3000: 0.1, 3500: 0.1}))
    fit = fit_arrays(
        _squared_error, {"w": jnp.zeros(5), "b": jnp.zeros(())}, (X, y), tx=tx,
        steps=4000, batch_size=16, order=order, key=random_key(0), steps_per_call=500,
    )
    np.testing.assert_allclose(fit.params["w"], w_closed, atol=2e-2)
    assert float(fit.params["b"]) == pytest.approx(float(b_closed), abs=1e-2)


def test_the_same_key_gives_the_same_result():
    X, y = _data(num_examples=31)

    def fit(seed):
        return fit_arrays(
            _squared_error, {"w": jnp.zeros(5), "b": jnp.zeros(())}, (X, y),
            tx=optax.adam(0.1), steps=20, batch_size=8, key=random_key(seed),
        )

    first, again, other = fit(0), fit(0), fit(1)
    for name in ("w", "b"):
        np.testing.assert_array_equal(first.params[name], again.params[name])
    np.testing.assert_array_equal(first.losses, again.losses)
    assert not np.array_equal(first.losses, other.losses)  # another key, other rows


def test_orders_draw_the_rows_they_say():
    """The loss records which rows each step saw (rows hold their own index)."""
    rows = jnp.arange(10.0)

    def seen(params, batch, key):
        return jnp.sum(params * 0.0), {"rows": batch}

    def run(order, steps, batch_size=None, key=None):
        fit = fit_arrays(
            seen, jnp.zeros(()), rows, tx=optax.sgd(0.1), steps=steps,
            batch_size=batch_size, order=order, key=key, has_aux=True,
        )
        return fit.metrics["rows"].astype(int)

    np.testing.assert_array_equal(run("full", 2), [np.arange(10)] * 2)
    # Epochs: 10 // 3 = 3 steps, row 10 of each permutation dropped.
    epochs = run("epochs", 6, batch_size=3)
    for epoch in range(2):
        order = np.random.default_rng([0, epoch]).permutation(10)
        np.testing.assert_array_equal(epochs[3 * epoch : 3 * epoch + 3], order[:9].reshape(3, 3))
    key = random_key(3)
    drawn = run("random", 4, batch_size=4, key=key)
    for i in range(4):
        expected = jax.random.choice(jax.random.fold_in(key, i), 10, (4,), replace=False)
        np.testing.assert_array_equal(drawn[i], expected)
    # At most N rows, all distinct.
    assert sorted(run("random", 1, batch_size=50, key=key)[0]) == list(range(10))


def test_state_threads_through_the_steps_and_the_key_is_per_step():
    """A counter in the state counts steps; the loss key is step i's."""

    def counting(params, batch, key, state):
        loss = jnp.sum(params * 0.0)
        return loss, ({"draw": jax.random.uniform(key)}, {"count": state["count"] + 1})

    key = random_key(5)
    fit = fit_arrays(
        counting, jnp.zeros(()), jnp.zeros((4, 1)), tx=optax.sgd(0.1), steps=5,
        batch_size=2, order="epochs", key=key, state={"count": jnp.zeros((), int)},
    )
    assert int(fit.state["count"]) == 5
    expected = [float(jax.random.uniform(jax.random.fold_in(key, i))) for i in range(5)]
    np.testing.assert_allclose(fit.metrics["draw"], expected)


def test_callback_sees_every_step():
    calls = []
    fit_arrays(
        _squared_error, {"w": jnp.zeros(2), "b": jnp.zeros(())},
        (jnp.ones((3, 2)), jnp.ones(3)), tx=optax.sgd(0.1), steps=3, order="full",
        callback=lambda done, params: calls.append((done, float(params["b"]))),
    )
    # b moves by lr * dL/db = 0.1 * 2 (b + 2 w - 1) from zero: 0.2 at step 1.
    assert [done for done, _ in calls] == [1, 2, 3]
    assert calls[0][1] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "options, message",
    [(dict(order="shuffled"), "order"), (dict(order="random", batch_size=2), "key"),
     (dict(order="epochs", batch_size=9), "fewer"), (dict(steps=0), "steps")],
)
def test_bad_options_raise_one_clear_line(options, message):
    options = {"steps": 1, "order": "full", **options}
    with pytest.raises(ValueError, match=message):
        fit_arrays(_squared_error, {}, jnp.zeros((4, 2)), tx=optax.sgd(0.1), **options)


@pytest.mark.parametrize("order", ["random", "epochs"])
def test_steps_per_call_changes_no_number(order):
    X, y = _data(num_examples=29)
    calls = []

    def fit(steps_per_call):
        return fit_arrays(
            _squared_error, {"w": jnp.zeros(5), "b": jnp.zeros(())}, (X, y),
            tx=optax.adam(0.1), steps=17, batch_size=8, order=order, key=random_key(2),
            steps_per_call=steps_per_call, callback=lambda done, _: calls.append(done),
        )

    one, chunked = fit(1), fit(5)
    assert calls[17:] == [5, 10, 15, 17]  # the end of each call
    np.testing.assert_array_equal(one.losses, chunked.losses)
    for name in ("w", "b"):
        np.testing.assert_array_equal(one.params[name], chunked.params[name])
