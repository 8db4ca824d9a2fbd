import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.cnn import CNNClassifier, cnn_tiny, resnet_small
from medjax.models.mlp import MLP, mlp_tiny


@pytest.mark.parametrize(
    "shape, spatial_dims, residual",
    [((3, 33, 29, 1), 2, False), ((2, 17, 15, 2), 2, True), ((2, 9, 11, 7, 1), 3, True)],
)
def test_cnn_output_shape_for_odd_sizes(shape, spatial_dims, residual):
    model = CNNClassifier(num_classes=3, widths=(4, 8, 8), residual=residual, spatial_dims=spatial_dims)
    x = jnp.ones(shape)
    variables = model.init(jax.random.key(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (shape[0], 3)


def test_cnn_rejects_the_wrong_rank():
    with pytest.raises(ValueError, match="spatial_dims=3"):
        cnn_tiny(num_classes=2, spatial_dims=3).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)), train=False)


def test_batchnorm_statistics_update_only_in_training():
    model = cnn_tiny(num_classes=2)
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 1)) * 3 + 2
    variables = model.init(jax.random.key(0), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # evaluation is deterministic and uses running statistics
    y1 = model.apply(variables, x, train=False)
    y2 = model.apply(variables, x[:1], train=False)
    np.testing.assert_allclose(y1[:1], y2, rtol=1e-5, atol=1e-6)


def test_residual_preset_has_projection_shortcuts():
    model = resnet_small(num_classes=2)
    variables = model.init(jax.random.key(0), jnp.ones((1, 32, 32, 1)), train=False)
    block = variables["params"]["ConvBlock_2"]  # first block of stage 2: stride 2
    assert block["Conv_2"]["kernel"].shape == (1, 1, 32, 64)
    assert "Conv_2" not in variables["params"]["ConvBlock_1"]  # same shape: identity


def test_mlp_is_linear_regression_without_hidden_layers():
    model = MLP(num_outputs=1, hidden_sizes=())
    x = jnp.arange(6.0).reshape(3, 2)
    variables = model.init(jax.random.key(0), x, train=False)
    kernel, bias = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x, train=False), x @ kernel + bias, rtol=1e-6)


def test_mlp_dropout_only_in_training():
    model = mlp_tiny(num_outputs=2, dropout_rate=0.5)
    x = jnp.ones((4, 5, 5, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))
