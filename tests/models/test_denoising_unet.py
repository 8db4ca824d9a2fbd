"""The denoising U-Net is the segmentation U-Net with a linear one-channel head."""

import jax.numpy as jnp
import numpy as np

from medjax.models.denoising_unet import denoising_unet_tiny
from medjax.models.unet import unet_tiny
from medjax.runtime import random_key


def test_it_reconstructs_with_the_unets_function_and_parameters():
    model = denoising_unet_tiny(spatial_dims=2, conv_impl="xla")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 10, 1)), jnp.float32)
    variables = model.init(random_key(0), x, train=False)
    out = model.apply(variables, x, train=False)
    assert set(out) == {"reconstruction"} and out["reconstruction"].shape == x.shape
    unet = unet_tiny(num_classes=1, spatial_dims=2, conv_impl="xla")
    inner = {k: v["unet"] for k, v in variables.items()}
    np.testing.assert_allclose(out["reconstruction"], unet.apply(inner, x, train=False),
                               rtol=1e-6)
    volume = jnp.zeros((1, 8, 8, 4, 2))
    model3d = denoising_unet_tiny(spatial_dims=3, num_outputs=2, conv_impl="xla")
    v3 = model3d.init(random_key(1), volume, train=False)
    assert model3d.apply(v3, volume, train=False)["reconstruction"].shape == volume.shape
