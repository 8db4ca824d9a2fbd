"""Reconstruction losses: hand-computed values."""

import jax.numpy as jnp
import numpy as np

from medjax import losses


def test_reconstruction_error_is_a_masked_per_example_mean():
    target = jnp.zeros((3, 2, 2, 1))
    reconstruction = jnp.stack([jnp.full((2, 2, 1), v) for v in (1.0, 2.0, 5.0)])
    error = losses.reconstruction_error(reconstruction, target, mask=jnp.array([True, True, False]))
    np.testing.assert_allclose(error, [1.0, 4.0, 0.0])


def test_kl_divergence_hand_computed():
    # KL(N(1, 1) || N(0, 1)) = 1/2; KL(N(0, 2) || N(0, 1)) = (2 - 1 - log 2) / 2.
    mean = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    log_variance = jnp.array([[0.0, np.log(2.0)], [0.0, 0.0]])
    kl = losses.kl_divergence(mean, log_variance)
    np.testing.assert_allclose(kl, [0.5 + (1 - np.log(2.0)) / 2, 0.0], rtol=1e-6)
    assert float(losses.kl_divergence(mean, log_variance, mask=jnp.array([False, True]))[0]) == 0
