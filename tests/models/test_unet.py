"""U-Net tests. Shapes are checked with ``jax.eval_shape`` (nothing compiles);
numerical tests fill the parameters from numpy instead of running ``model.init``,
whose random initialisers dominate compile time on CPU."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.unet import UNet, unet_original, unet_small, unet_tiny
from medjax.runtime import random_key


def _shapes(model, shape, *, train, **kwargs):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(
        partial(model.init, train=False), random_key(0), x
    )
    rngs = {"dropout": random_key(1)}
    out = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=train, mutable=["batch_stats"] if train else False,
            rngs=rngs,
        ),
        variables, x,
    )
    out = out[0] if train else out
    return variables, jax.tree.map(lambda a: a.shape, out)


def numpy_variables(model, x, seed=0):
    """Variables with ``model.init``'s structure, He-normal kernels drawn in numpy."""
    shapes = jax.eval_shape(partial(model.init, train=False), random_key(0), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in),
                               jnp.float32)
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _count(variables):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    "shape, spatial_dims",
    [
        ((2, 37, 45, 1), 2),
        ((1, 11, 13, 9, 1), 3),
        ((1, 16, 8, 2), 2),
        ((1, 1, 3, 1), 2),
    ],
)
def test_output_has_the_input_spatial_shape(shape, spatial_dims):
    model = unet_tiny(num_classes=3, spatial_dims=spatial_dims)
    for train in (False, True):
        _, out = _shapes(model, shape, train=train)
        assert out == shape[:-1] + (3,)


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_every_option_gives_full_resolution_logits(norm, residual, upsample):
    model = UNet(
        num_classes=2, depth=2, base_width=6, norm=norm, num_groups=4,
        residual=residual, upsample=upsample, dropout_rate=0.2,
    )
    variables, out = _shapes(model, (2, 13, 10, 1), train=True)
    assert out == (2, 13, 10, 2)
    params = variables["params"]
    assert ("batch_stats" in variables) == (norm == "batch")
    conv = params["down_1"]["Conv_0"]
    assert ("bias" in conv) == (norm == "none")  # bias only without normalisation
    # residual blocks project only where the width changes (every block here)
    assert ("Conv_2" in params["down_1"]) == residual
    if residual:
        assert params["down_1"]["Conv_2"]["kernel"].shape == (1, 1, 6, 12)
    up = params["upconv_0"]["kernel"].shape
    assert up == ((2, 2, 12, 6) if upsample == "transpose" else (1, 1, 12, 6))


@pytest.mark.parametrize(
    "shape, spatial_dims", [((2, 37, 45, 1), 2), ((1, 11, 13, 9, 1), 3)]
)
def test_deep_supervision_returns_lower_resolutions_only_in_training(
    shape, spatial_dims
):
    model = UNet(num_classes=3, spatial_dims=spatial_dims, depth=3, base_width=4,
                 deep_supervision=True)
    _, out = _shapes(model, shape, train=True)
    spatial = shape[1:-1]
    expected = tuple(
        (shape[0], *(-(-s // 2**i) for s in spatial), 3) for i in range(3)
    )  # full, ceil(1/2), ceil(1/4): highest resolution first
    assert out == expected
    _, out = _shapes(model, shape, train=False)
    assert out == shape[:-1] + (3,)


def test_bad_rank_and_options_are_reported():
    with pytest.raises(ValueError, match="spatial_dims=3"):
        _shapes(unet_tiny(num_classes=2, spatial_dims=3), (1, 8, 8, 1), train=False)
    with pytest.raises(ValueError, match="norm"):
        _shapes(unet_tiny(num_classes=2, norm="layer"), (1, 8, 8, 1), train=False)
    with pytest.raises(ValueError, match="upsample"):
        _shapes(unet_tiny(num_classes=2, upsample="pixel"), (1, 8, 8, 1), train=False)


def _expected_count(in_ch, classes, depth, base, dims, norm):
    """Parameters counted layer by layer: 3^d convs, 2^d transposed convs, 1x1 head."""
    per_channel = 1 if norm == "none" else 2  # conv bias, or norm scale + bias
    k3, k2 = 3**dims, 2**dims
    widths = [base * 2**i for i in range(depth + 1)]
    total, cin = 0, in_ch
    for w in widths:  # encoder and bottleneck: two convs per level
        total += k3 * cin * w + k3 * w * w + 2 * per_channel * w
        cin = w
    for w in reversed(widths[:-1]):
        total += k2 * cin * w + w  # up-convolution halves the channels
        total += k3 * 2 * w * w + k3 * w * w + 2 * per_channel * w  # after concat
        cin = w
    return total + cin * classes + classes


@pytest.mark.parametrize(
    "preset, spatial_dims, expected_millions",
    [(unet_original, 2, 31.03), (unet_small, 2, 0.48), (unet_small, 3, 1.40),
     (unet_tiny, 2, 0.0075)],
)
def test_preset_parameter_counts(preset, spatial_dims, expected_millions):
    model = preset(num_classes=2, spatial_dims=spatial_dims)
    shape = (1,) + (32,) * spatial_dims + (1,)
    variables, _ = _shapes(model, shape, train=False)
    count = _count(variables)
    assert count == _expected_count(
        1, 2, model.depth, model.base_width, spatial_dims, model.norm
    )
    assert count / 1e6 == pytest.approx(expected_millions, rel=0.01)


def test_unet_original_matches_the_paper():
    model = unet_original(num_classes=2)
    assert (model.depth, model.base_width, model.norm, model.upsample) == (
        4, 64, "none", "transpose"
    )
    variables, _ = _shapes(model, (1, 32, 32, 1), train=False)
    bottleneck = variables["params"]["bottleneck"]["Conv_1"]["kernel"]
    assert bottleneck.shape == (3, 3, 1024, 1024)
    assert _count(variables) == 31_030_658


def test_padding_is_at_the_end_and_outputs_are_local():
    """Without normalisation, the logits of a 37x45 image equal those of the same
    image zero-padded at the end to 40x48 (the next multiples of 4), and a voxel's
    logits ignore inputs beyond the receptive field (radius <= 26 for depth 2:
    2+1+4+2+8+2+4+1+2 from convs, pools and up-convolutions) but not near ones."""
    model = unet_tiny(num_classes=2, norm="none")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 37, 45, 1)), jnp.float32)
    variables = numpy_variables(model, x)
    apply = jax.jit(lambda x: model.apply(variables, x, train=False))
    padded = jnp.pad(x, ((0, 0), (0, 3), (0, 3), (0, 0)))
    out = apply(x)
    np.testing.assert_allclose(out, apply(padded)[:, :37, :45], rtol=1e-5, atol=1e-6)

    far = x.at[0, 30, 35, 0].add(5.0)  # >= 28 from every voxel of [:3, :4]
    near = x.at[0, 4, 3, 0].add(5.0)
    out_far, out_near = apply(far), apply(near)
    np.testing.assert_array_equal(out_far[0, :3, :4], out[0, :3, :4])
    assert not np.allclose(out_near[0, 2, 3], out[0, 2, 3])
    assert not np.allclose(out_far[0, 30, 35], out[0, 30, 35])


def test_a_short_training_run_fits_a_mask():
    """20 Adam steps on one image/mask pair cut the cross-entropy by a large factor
    (gradients flow through every path; batch statistics update in training)."""
    import optax

    model = unet_tiny(num_classes=2)
    yy, xx = np.mgrid[:16, :16]
    mask = ((yy - 7) ** 2 + (xx - 9) ** 2 < 20).astype(np.int32)[None]
    image = jnp.asarray(mask[..., None] + 0.3 * np.random.default_rng(1).normal(
        size=(1, 16, 16, 1)), jnp.float32)
    variables = numpy_variables(model, image)
    optimizer = optax.adam(3e-2)

    def loss_fn(params, batch_stats):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats}, image, train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, mask).mean()
        return loss, updates["batch_stats"]

    @jax.jit
    def train(params, batch_stats):
        def step(carry, _):
            params, batch_stats, opt_state = carry
            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, batch_stats
            )
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

        carry = (params, batch_stats, optimizer.init(params))
        return jax.lax.scan(step, carry, length=20)

    (_, batch_stats, _), losses = train(variables["params"], variables["batch_stats"])
    assert losses[-1] < losses[0] / 10, losses
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), batch_stats,
                         variables["batch_stats"])
    assert all(jax.tree.leaves(moved))
