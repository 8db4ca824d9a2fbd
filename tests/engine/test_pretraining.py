"""Greedy layer-wise pretraining of a stacked autoencoder (RBM stacks:
tests/models/test_dbn.py)."""

import jax.numpy as jnp
import numpy as np

from medjax.engine.pretraining import train_stacked_autoencoder
from medjax.runtime import random_key


def test_greedy_layerwise_pretraining_then_fine_tuning():
    from medjax.models.autoencoder import StackedAutoencoder

    rng = np.random.default_rng(0)
    # Images on a 3-dimensional subspace: a stack with a 3-wide code can fit them.
    images = (rng.normal(size=(64, 3)) @ rng.normal(size=(3, 64)) / 4).reshape(64, 8, 8, 1)
    model = StackedAutoencoder(hidden=(24, 12, 3))
    initial = model.init(random_key(0), jnp.asarray(images[:1]), train=False)
    before = float(jnp.mean(jnp.square(
        model.apply(initial, jnp.asarray(images), train=False)["reconstruction"] - images
    )))
    variables, history = train_stacked_autoencoder(
        model, images, pretrain_steps=150, finetune_steps=150, batch_size=32,
        learning_rate=3e-3,
    )
    assert len(history["pretrain_losses"]) == 3
    for losses in history["pretrain_losses"]:  # every level learns
        assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert history["mse_after_pretraining"] < before
    assert history["mse_after_finetuning"] < history["mse_after_pretraining"]
    out = model.apply(variables, jnp.asarray(images), train=False)
    assert out["latent"].shape == (64, 3)
