"""The CenterNet model: head shapes in 2D and 3D (odd sizes, traced without
compiling), its heatmap prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.detection.centernet import HEATMAP_PRIOR, centernet_tiny
from medjax.runtime import random_key


@pytest.mark.parametrize("shape", [(13, 10), (9, 6, 7)])
def test_heads_have_the_inputs_resolution(shape):
    model = centernet_tiny(spatial_dims=len(shape), num_classes=1)
    x = jnp.ones((2,) + shape + (1,))
    variables = jax.eval_shape(lambda: model.init(random_key(0), x, train=False))
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert out["heatmap"].shape == (2,) + shape + (1,)
    assert out["size"].shape == out["offset"].shape == (2,) + shape + (len(shape),)
    assert {"trunk", "heatmap_0", "heatmap_1", "size_0", "offset_1"} <= set(
        variables["params"]
    )


def test_the_heatmap_starts_at_centernets_prior():
    model = centernet_tiny(
        num_classes=1,
        depth=1,
        base_width=2,
        trunk_width=2,
        head_width=2,
        conv_impl="xla",
    )
    init = jax.jit(lambda key: model.init(key, jnp.ones((1, 4, 4, 1)), train=False))
    variables = init(random_key(0))
    np.testing.assert_allclose(variables["params"]["heatmap_bias"], [HEATMAP_PRIOR])
