"""medjax.models.fast_strided against flax's own layers, and the CNN family with
``conv_impl='cpu'`` against ``conv_impl='xla'``: the same parameters, outputs and
gradients (float32 tolerance); ``xla`` is nn.Conv / nn.max_pool bit for bit."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import cnn, fast_strided
from medjax.runtime import random_key
from tests.models.test_fast_layers import (
    OPTIONS,
    _assert_same,
    _random,
    _value_and_grads,
)

# (input shape, kernel size, strides, padding): every strided or padded
# convolution of the CNNs, odd and even sizes, 2D and 3D
CONV_CASES = [
    ((2, 8, 6, 3), 3, 2, "SAME"),  # downsampling block, even sizes
    ((2, 7, 9, 3), 3, 2, "SAME"),  # odd sizes: XLA pads (1, 1) instead of (0, 1)
    ((2, 8, 7, 3), 1, 2, "SAME"),  # ResNet projection
    ((2, 9, 8, 1), 7, 2, 3),  # imagenet stem
    ((1, 6, 5, 7, 3), 3, 2, "SAME"),
    ((2, 5, 6, 3, 2), 1, 2, "SAME"),
    ((1, 9, 8, 7, 1), 7, 2, 3),
]


@pytest.mark.parametrize("x_shape,k,stride,padding", CONV_CASES, ids=str)
def test_strided_conv_cpu_equals_nn_conv(x_shape, k, stride, padding):
    dims = len(x_shape) - 2
    pad = padding if isinstance(padding, str) else [(padding, padding)] * dims
    window, strides = (k,) * dims, (stride,) * dims
    flax_conv = nn.Conv(5, window, strides, padding=pad, use_bias=False)
    x, kernel = _random(x_shape, 1), _random((*window, x_shape[-1], 5), 2)

    def reference(x, kernel):
        return flax_conv.apply({"params": {"kernel": kernel}}, x)

    want = _value_and_grads(reference, None, x, kernel)
    xla = _value_and_grads(
        partial(fast_strided.conv_general_xla, strides=strides, padding=pad),
        None,
        x,
        kernel,
    )
    for got, expected in zip(jax.tree.leaves(xla), jax.tree.leaves(want)):
        np.testing.assert_array_equal(got, expected)  # the same XLA program
    cpu = partial(fast_strided.conv_general_cpu, strides=strides, padding=pad)
    _assert_same(_value_and_grads(cpu, OPTIONS["ynn"], x, kernel), want)


@pytest.mark.parametrize(
    "x_shape", [(2, 8, 6, 3), (2, 7, 9, 3), (1, 5, 6, 7, 2)], ids=str
)
def test_strided_max_pool_cpu_equals_nn_max_pool(x_shape):
    # distinct values: no ties, where the two gradients may split differently
    dims = len(x_shape) - 2
    values = np.random.default_rng(5).permutation(np.prod(x_shape)) - 50.0
    x = jnp.asarray(values.reshape(x_shape), jnp.float32)
    args = ((3,) * dims, (2,) * dims, [(1, 1)] * dims)
    want = _value_and_grads(lambda x: nn.max_pool(x, *args), None, x)
    got = _value_and_grads(lambda x: fast_strided.max_pool(x, *args, "cpu"), None, x)
    assert got[0].shape == (
        x_shape[0],
        *(-(-s // 2) for s in x_shape[1:-1]),
        x_shape[-1],
    )
    _assert_same(got, want)
    xla = _value_and_grads(lambda x: fast_strided.max_pool(x, *args, "xla"), None, x)
    for a, b in zip(jax.tree.leaves(xla), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


PRESETS = [
    "cnn_tiny",
    "cnn_small",
    "resnet_tiny",
    "resnet_small",
    "resnet10",
    "resnet34",
]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("spatial_dims,stem", [(2, "small"), (3, "imagenet")])
def test_presets_have_the_same_parameters_with_either_impl(preset, spatial_dims, stem):
    x = jax.ShapeDtypeStruct((1, *(16,) * spatial_dims, 1), jnp.float32)

    def tree(impl):
        model = getattr(cnn, preset)(
            num_classes=2, spatial_dims=spatial_dims, stem=stem, conv_impl=impl
        )
        return jax.eval_shape(
            lambda x: model.init(random_key(0), x, train=False), x
        )

    xla, cpu = tree("xla"), tree("cpu")
    assert jax.tree.structure(cpu) == jax.tree.structure(xla)
    assert jax.tree.leaves(cpu) == jax.tree.leaves(xla)
    backbone = xla["params"]["backbone"]
    assert backbone["stem_conv"]["kernel"].shape[:spatial_dims] == (
        (3,) * spatial_dims if stem == "small" else (7,) * spatial_dims
    )
    assert set(backbone["stage1_block0"]) >= {"Conv_0", "Conv_1"}


# the four families: a kernel-supported width (16) in two of them
FAMILIES = {
    "plain_2d": ({"widths": (4, 16)}, (2, 11, 10, 1)),
    "plain_3d_imagenet": (
        {"widths": (4, 8), "spatial_dims": 3, "stem": "imagenet"},
        (2, 9, 8, 7, 1),
    ),
    "resnet_2d_projections": (
        {"widths": (16, 8, 8), "blocks_per_stage": (1, 2, 1), "residual": True},
        (2, 12, 9, 2),
    ),
    "resnet_3d": (
        {"widths": (4, 8), "residual": True, "spatial_dims": 3},
        (2, 6, 7, 5, 1),
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_cnn_family_cpu_impl_equals_xla_impl(family):
    fields, shape = FAMILIES[family]
    x = _random(shape, 8)
    models = {
        impl: cnn.CNNClassifier(num_classes=3, conv_impl=impl, **fields)
        for impl in ("xla", "cpu")
    }
    shapes = {
        impl: jax.eval_shape(lambda m=m: m.init(random_key(0), x, train=False))
        for impl, m in models.items()
    }
    assert jax.tree.structure(shapes["cpu"]) == jax.tree.structure(shapes["xla"])
    assert jax.tree.leaves(shapes["cpu"]) == jax.tree.leaves(shapes["xla"])
    leaves, tree = jax.tree.flatten(shapes["xla"])
    variables = jax.tree.unflatten(
        tree, [0.3 * _random(s.shape, 20 + i) for i, s in enumerate(leaves)]
    )
    cotangent = _random((shape[0], 3), 9)

    def outputs(impl, options):
        def loss(params):
            out, updates = models[impl].apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(out * cotangent), (out, updates)

        run = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=options)
        return run(variables["params"])

    _assert_same(outputs("cpu", OPTIONS["ynn"]), outputs("xla", None))


def test_unknown_conv_impl_is_one_clear_error():
    model = cnn.cnn_tiny(num_classes=2, conv_impl="cudnn")
    with pytest.raises(ValueError, match="conv_impl"):
        jax.eval_shape(
            lambda: model.init(random_key(0), jnp.zeros((1, 8, 8, 1)), train=False)
        )


def test_backbone_like_inherits_conv_impl():
    model = cnn.cnn_tiny(num_classes=2, conv_impl="xla")
    assert cnn.backbone_like(model, spatial_dims=2).conv_impl == "xla"
