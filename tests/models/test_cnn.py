import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import cnn
from medjax.models.cnn import CNNClassifier, cnn_tiny, resnet_small
from medjax.models.mlp import MLP, mlp_tiny
from medjax.runtime import random_key


@pytest.mark.parametrize(
    "shape, spatial_dims, residual",
    [((3, 33, 29, 1), 2, False), ((2, 17, 15, 2), 2, True), ((2, 9, 11, 7, 1), 3, True)],
)
def test_cnn_output_shape_for_odd_sizes(shape, spatial_dims, residual):
    model = CNNClassifier(num_classes=3, widths=(4, 8, 8), residual=residual, spatial_dims=spatial_dims)
    x = jnp.ones(shape)
    variables = model.init(random_key(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (shape[0], 3)


def test_cnn_rejects_the_wrong_rank():
    with pytest.raises(ValueError, match="spatial_dims=3"):
        cnn_tiny(num_classes=2, spatial_dims=3).init(random_key(0), jnp.ones((1, 8, 8, 1)), train=False)


def test_batchnorm_statistics_update_only_in_training():
    model = cnn_tiny(num_classes=2)
    x = jax.random.normal(random_key(1), (4, 16, 16, 1)) * 3 + 2
    variables = model.init(random_key(0), x, train=False)
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
    x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(random_key(0), x, train=False), x)
    backbone = variables["params"]["backbone"]
    block = backbone["stage1_block0"]  # first block of stage 1: stride 2
    assert block["Conv_2"]["kernel"].shape == (1, 1, 32, 64)
    assert "Conv_2" not in backbone["stage0_block1"]  # same shape: identity


def test_mlp_is_linear_regression_without_hidden_layers():
    model = MLP(num_outputs=1, hidden_sizes=())
    x = jnp.arange(6.0).reshape(3, 2)
    variables = model.init(random_key(0), x, train=False)
    kernel, bias = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x, train=False), x @ kernel + bias, rtol=1e-6)


def test_mlp_dropout_only_in_training():
    model = mlp_tiny(num_outputs=2, dropout_rate=0.5)
    x = jnp.ones((4, 5, 5, 1))
    variables = model.init(random_key(0), x, train=False)
    a = model.apply(variables, x, train=True, rngs={"dropout": random_key(1)})
    b = model.apply(variables, x, train=True, rngs={"dropout": random_key(2)})
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))


PRESETS = ["cnn_tiny", "cnn_small", "resnet_tiny", "resnet_small", "resnet10", "resnet18", "resnet34"]


@pytest.mark.parametrize("stem", ["small", "imagenet"])
@pytest.mark.parametrize("spatial_dims, shape", [(2, (3, 37, 29, 2)), (3, (2, 19, 23, 17, 1))])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_gives_logits_for_odd_sizes(preset, spatial_dims, shape, stem):
    # Shapes only (jax.eval_shape): no compute, so the full ResNets stay cheap.
    model = getattr(cnn, preset)(num_classes=5, spatial_dims=spatial_dims, stem=stem)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(random_key(0), x, train=False), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (shape[0], 5)
    assert set(variables["params"]) == {"backbone", "head"}


@pytest.mark.parametrize("preset, expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672)])
def test_resnet_parameter_counts_equal_torchvision(preset, expected):
    # torchvision.models.resnet18/34 (ImageNet: 3 channels, 1000 classes) have
    # exactly these many parameters; BatchNorm scale and bias count, running
    # statistics do not.
    model = getattr(cnn, preset)(num_classes=1000, stem="imagenet")
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(random_key(0), x, train=False), x)
    assert sum(v.size for v in jax.tree.leaves(variables["params"])) == expected


def test_resnet_blocks_per_stage():
    x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
    variables = jax.eval_shape(
        lambda x: cnn.resnet34(num_classes=2).init(random_key(0), x, train=False), x)
    blocks = [k for k in variables["params"]["backbone"] if k.startswith("stage")]
    counts = [sum(k.startswith(f"stage{i}_") for k in blocks) for i in range(4)]
    assert counts == [3, 4, 6, 3]
    with pytest.raises(ValueError, match="blocks_per_stage"):
        CNNClassifier(num_classes=2, widths=(4, 8), blocks_per_stage=(1, 1, 1)).init(
            random_key(0), jnp.ones((1, 8, 8, 1)), train=False)


def test_frozen_stages_keep_their_batch_statistics():
    model = cnn.resnet_tiny(num_classes=2, frozen_stages=2)
    x = jax.random.normal(random_key(1), (4, 16, 16, 1)) * 3 + 2
    variables = model.init(random_key(0), x, train=False)
    out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = variables["batch_stats"]["backbone"], updates["batch_stats"]["backbone"]
    for name in before:
        same = all(jax.tree.leaves(jax.tree.map(np.array_equal, before[name], after[name])))
        frozen = name.startswith(("stem", "stage0", "stage1"))
        assert same == frozen, name
    # frozen layers normalise with running statistics, as in evaluation: with all
    # stages frozen, training-mode outputs equal evaluation outputs.
    everything = cnn.resnet_tiny(num_classes=2, frozen_stages=3)
    np.testing.assert_allclose(
        everything.apply(variables, x, train=True, mutable=["batch_stats"])[0],
        everything.apply(variables, x, train=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("global_pool, reduce", [("mean", np.mean), ("max", np.max)])
def test_global_pool_reduces_the_last_feature_maps(global_pool, reduce):
    backbone = cnn.ConvBackbone(widths=(4, 8), spatial_dims=3, global_pool=global_pool)
    x = jax.random.normal(random_key(0), (2, 6, 5, 4, 1))
    variables = backbone.init(random_key(1), x, train=False)
    features, state = backbone.apply(
        variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    )
    (maps,) = state["intermediates"]["stage1_block0"]["__call__"]
    assert maps.shape == (2, 3, 3, 2, 8)
    np.testing.assert_allclose(features, reduce(np.asarray(maps), axis=(1, 2, 3)), rtol=1e-6)


@pytest.mark.parametrize("family", ["cnn", "multistream", "slices"])
def test_global_pool_reaches_the_backbone_of_every_family(family):
    from medjax.models import multistream
    from medjax.models.sequence import frame_max_tiny

    models = {
        "cnn": (cnn_tiny(num_classes=2, global_pool="median"), (jnp.ones((1, 8, 8, 1)),)),
        "multistream": (
            multistream.multistream_tiny(num_classes=2, num_streams=2, global_pool="median"),
            ((jnp.ones((1, 8, 8, 1)), jnp.ones((1, 8, 8, 1))),),
        ),
        "slices": (frame_max_tiny(num_outputs=2, global_pool="median"), (jnp.ones((1, 3, 8, 8, 1)),)),
    }
    model, inputs = models[family]
    with pytest.raises(ValueError, match="model.global_pool: expected one of"):
        model.init(random_key(0), *inputs, train=False)
