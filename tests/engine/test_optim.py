import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.engine.optim import learning_rate_schedule, make_optimizer


def test_warmup_then_cosine():
    schedule = learning_rate_schedule(1.0, total_steps=110, schedule="cosine", warmup_steps=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)  # half-way down the cosine
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_a_warmup_longer_than_the_run_is_fitted_to_half_of_it():
    from medjax.engine.optim import fit_warmup

    assert fit_warmup(100, total_steps=6) == 3
    assert fit_warmup(6, total_steps=6) == 3
    assert fit_warmup(5, total_steps=6) == 5  # fits: kept
    assert fit_warmup(0, total_steps=6) == 0 and fit_warmup(1, total_steps=1) == 0
    schedule = learning_rate_schedule(1.0, 6, "cosine", warmup_steps=fit_warmup(100, 6))
    np.testing.assert_allclose([float(schedule(s)) for s in range(7)],
                               [0, 1 / 3, 2 / 3, 1, 0.75, 0.25, 0], atol=1e-6)


def test_step_decay():
    schedule = learning_rate_schedule(0.1, total_steps=100, schedule="step", decay_boundaries=(0.5, 0.75))
    values = [float(schedule(s)) for s in (0, 49, 50, 74, 75, 99)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_constant():
    schedule = learning_rate_schedule(0.3, total_steps=10, schedule="constant")
    assert float(schedule(0)) == float(schedule(9)) == pytest.approx(0.3)


def test_sgd_momentum_update_matches_hand_computation():
    tx = make_optimizer("sgd", lr=0.1, total_steps=10, schedule="constant", momentum=0.9)
    params = {"w": jnp.array([1.0])}
    state = tx.init(params)
    grads = {"w": jnp.array([2.0])}
    updates, state = tx.update(grads, state, params)
    assert float(updates["w"][0]) == pytest.approx(-0.2)
    updates, state = tx.update(grads, state, params)
    assert float(updates["w"][0]) == pytest.approx(-0.1 * (2.0 + 0.9 * 2.0))


def test_adamw_decays_weights():
    tx = make_optimizer("adamw", lr=0.1, total_steps=10, schedule="constant", weight_decay=0.5)
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
    assert float(updates["w"][0]) == pytest.approx(-0.1 * 0.5 * 2.0)


def test_gradient_clipping():
    tx = make_optimizer("sgd", lr=1.0, total_steps=10, schedule="constant", momentum=0.0, grad_clip_norm=1.0)
    params = {"w": jnp.zeros(2)}
    updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)
    assert isinstance(tx, optax.GradientTransformation)


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"name": "rmsprop"}, "optim.name"),
        ({"lr": 0.0}, "optim.lr"),
        ({"schedule": "linear"}, "optim.schedule"),
        ({"warmup_steps": 10}, "optim.warmup_steps"),  # fit_warmup is the config's
        ({"warmup_steps": -1}, "optim.warmup_steps"),
    ],
)
def test_bad_options_name_themselves(kwargs, option):
    settings = {"name": "adam", "lr": 1e-3, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=option):
        make_optimizer(**settings)
