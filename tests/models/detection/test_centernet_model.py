"""The CenterNet model: head shapes in 2D and 3D (odd sizes), its heatmap prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.detection.centernet import HEATMAP_PRIOR, centernet_tiny


@pytest.mark.parametrize("shape", [(13, 10), (9, 6, 7)])
def test_heads_have_the_inputs_resolution(shape):
    model = centernet_tiny(spatial_dims=len(shape), num_classes=1)
    x = jnp.ones((2,) + shape + (1,))
    variables = model.init(jax.random.key(0), x, train=False)
    out = model.apply(variables, x, train=False)
    assert out["heatmap"].shape == (2,) + shape + (1,)
    assert out["size"].shape == out["offset"].shape == (2,) + shape + (len(shape),)
    np.testing.assert_allclose(variables["params"]["heatmap_bias"], [HEATMAP_PRIOR])
    assert {"trunk", "heatmap_0", "heatmap_1", "size_0", "offset_1"} <= set(
        variables["params"]
    )
