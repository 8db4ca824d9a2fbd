"""Restoration by gradient steps, against a hand-computed energy gradient."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.inferers.restoration import restoration_energy, restore


def _zero_decoder(x):
    return {"reconstruction": jnp.zeros_like(x)}


def test_one_step_follows_the_hand_computed_gradient_inside_only():
    image = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 1)), jnp.float32)
    inside = jnp.zeros((2, 5, 5), bool).at[:, 1:4, 1:4].set(True)
    # E = sum_inside x^2 + w |x - x0|: at x = x0 the gradient is 2 x0 (the L1
    # term's subgradient is 0 there).
    one = restore(_zero_decoder, image, inside, steps=1, step_size=0.1, weight=0.5)
    expected = np.where(np.asarray(inside)[..., None], 0.8 * np.asarray(image), image)
    np.testing.assert_allclose(one, expected, rtol=1e-6)
    # Two steps: the L1 term now pulls back toward x0 by w * sign(x1 - x0).
    two = restore(_zero_decoder, image, inside, steps=2, step_size=0.1, weight=0.5)
    x1 = expected
    x2 = x1 - 0.1 * (2 * x1 + 0.5 * np.sign(x1 - np.asarray(image)))
    np.testing.assert_allclose(two, np.where(np.asarray(inside)[..., None], x2, image),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        restore(_zero_decoder, image, inside, steps=0, step_size=0.1, weight=0.5), image
    )


def test_the_energy_adds_a_vaes_weighted_kl():
    x = jnp.ones((1, 2, 2, 1))

    def vae(inputs):
        return {"reconstruction": jnp.zeros_like(inputs), "mean": jnp.ones((1, 3)),
                "log_variance": jnp.zeros((1, 3))}

    inside = jnp.ones((1, 2, 2), bool)
    # error 4 x 1; L1 to x0 = 0 (x is x0); KL of N(1, 1) vs N(0, 1) in 3 dims = 1.5.
    energy = restoration_energy(vae, x, x, inside, weight=1.0, kl_weight=2.0)
    assert float(energy[0]) == pytest.approx(4.0 + 2.0 * 1.5)
