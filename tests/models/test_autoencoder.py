import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.models import autoencoder as ae
from medjax.runtime import random_key


@pytest.mark.parametrize(
    "model, shape",
    [
        (ae.autoencoder_tiny(), (2, 33, 31, 1)),
        (ae.autoencoder_tiny(spatial_dims=3), (2, 9, 10, 7, 1)),
        (ae.autoencoder_tiny(norm="group"), (2, 16, 16, 1)),
        (ae.autoencoder_tiny(norm="batch", num_outputs=2), (3, 20, 20, 2)),
        (ae.vae_tiny(), (2, 17, 32, 1)),
        (ae.vae_tiny(spatial_dims=3), (1, 8, 9, 8, 1)),
        (ae.dense_autoencoder_tiny(), (2, 17, 15, 1)),
        (ae.stacked_autoencoder_tiny(), (2, 12, 13, 1)),
    ],
)
def test_output_shapes(model, shape):
    # Shapes only: traced, not run.
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(random_key(1), x, train=False), x)
    out, _ = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, rngs={"sample": random_key(2)}, mutable=["batch_stats"]
        ),
        variables, x,
    )
    latent = getattr(model, "latent", None) or model.hidden[-1]
    assert out["reconstruction"].shape == (*shape[:-1], model.num_outputs)
    assert out["latent"].shape == (shape[0], latent)
    if isinstance(model, ae.VAE):
        assert out["mean"].shape == out["log_variance"].shape == (shape[0], latent)


def test_encode_and_decode_compose_to_the_call():
    model = ae.autoencoder_tiny()
    x = jax.random.normal(random_key(0), (2, 15, 21, 1))
    variables = model.init(random_key(1), x, train=False)
    z = model.apply(variables, x, method="encode")
    y = model.apply(variables, z, shape=(15, 21), method="decode")
    np.testing.assert_allclose(y, model.apply(variables, x, train=False)["reconstruction"], atol=1e-6)


def test_vae_samples_in_training_and_uses_the_mean_at_evaluation():
    model = ae.vae_tiny()
    x = jax.random.normal(random_key(0), (2, 16, 16, 1))
    variables = model.init(random_key(1), x, train=False)
    evaluation = model.apply(variables, x, train=False)
    np.testing.assert_array_equal(evaluation["latent"], evaluation["mean"])
    first, second = (
        model.apply(variables, x, train=True, rngs={"sample": random_key(k)})
        for k in (3, 4)
    )
    assert not np.allclose(first["latent"], second["latent"])
    np.testing.assert_array_equal(first["mean"], evaluation["mean"])
    # z - mean is standard normal noise scaled by the posterior standard deviation.
    draws = model.apply(
        variables, jnp.repeat(x[:1], 256, 0), train=True, rngs={"sample": random_key(5)}
    )
    eps = (draws["latent"] - draws["mean"]) / jnp.exp(0.5 * draws["log_variance"])
    assert abs(float(eps.mean())) < 0.1 and abs(float(eps.std()) - 1) < 0.1


def test_wrong_rank_names_the_model():
    model = ae.autoencoder_tiny(spatial_dims=3)
    with pytest.raises(ValueError, match=r"ConvAutoencoder\(spatial_dims=3\)"):
        model.init(random_key(0), jnp.zeros((1, 8, 8, 1)), train=False)


def test_encoder_transfers_to_a_classifier():
    autoencoder = ae.autoencoder_tiny()
    x = jnp.ones((1, 16, 16, 1))
    trained = autoencoder.init(random_key(0), x, train=False)
    classifier = ae.EncoderClassifier(num_classes=3, widths=(4, 8), latent=8)
    fresh = classifier.init(random_key(1), x, train=False)
    moved = ae.transfer_encoder(fresh, trained)
    same = jax.tree.map(np.array_equal, moved["params"]["encoder"], trained["params"]["encoder"])
    assert all(jax.tree.leaves(same))
    kept = jax.tree.map(np.array_equal, moved["params"]["Dense_0"], fresh["params"]["Dense_0"])
    assert all(jax.tree.leaves(kept))  # the head stays at its initial values
    assert classifier.apply(moved, x, train=False).shape == (1, 3)
    # The classifier's code equals the autoencoder's: the backbone is the same function.
    code = autoencoder.apply(trained, x, method="encode")
    head = moved["params"]["Dense_0"]
    np.testing.assert_allclose(
        classifier.apply(moved, x, train=False),
        jax.nn.relu(code) @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6,
    )
    other = ae.EncoderClassifier(num_classes=3, widths=(4, 16), latent=8)
    with pytest.raises(ValueError, match="encoder shapes differ"):
        ae.transfer_encoder(other.init(random_key(1), x, train=False), trained)


def _blobs(key, count, size):
    """Smooth random images: a Gaussian blob at a random place, in [-1, 1]."""
    centres = jax.random.uniform(key, (count, 2), minval=4, maxval=size - 4)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij"), -1)
    d2 = jnp.sum(jnp.square(grid[None] - centres[:, None, None]), -1)
    return (2 * jnp.exp(-d2 / 18.0) - 1)[..., None]


@pytest.mark.parametrize("factory", [ae.autoencoder_tiny, ae.dense_autoencoder_tiny])
def test_a_tiny_autoencoder_reconstructs_better_after_training(factory):
    model = factory()
    images = _blobs(random_key(0), 32, 16)
    held_out = _blobs(random_key(1), 16, 16)
    params = model.init(random_key(2), images[:1], train=False)["params"]
    tx = optax.adam(3e-3)

    def mse(params, x):
        return jnp.mean(jnp.square(model.apply({"params": params}, x, train=True)["reconstruction"] - x))

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(mse)(params, images)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    before = float(mse(params, held_out))
    opt_state = tx.init(params)
    for _ in range(100):
        params, opt_state = step(params, opt_state)
    after = float(mse(params, held_out))
    assert after < 0.5 * before, (before, after)
