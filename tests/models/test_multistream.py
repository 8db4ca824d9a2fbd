from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.cnn import ConvBackbone
from medjax.models.multistream import (
    MultistreamCNN,
    multistream_resnet18,
    multistream_small,
    multistream_tiny,
)
from medjax.runtime import random_key

WIDTHS = (4, 8)


def random_views(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)


def init(model, views, seed=0):
    """Jitted initialisation: one compile, from medjax's key (threefry's numbers,
    drawn flat, which XLA compiles fast)."""
    key = random_key(seed)
    return jax.jit(partial(model.init, train=False))(key, views)


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "shapes, spatial_dims, shared",
    [
        (((3, 9, 9, 1), (3, 7, 5, 2)), 2, False),
        (((2, 5, 7, 9, 1), (2, 5, 5, 5, 1), (2, 7, 5, 3, 1)), 3, True),
        (((2, 7, 5, 3, 1), (2, 7, 5, 1), (2, 5, 3, 1)), (3, 2, 2), False),
    ],
)
def test_output_shape_for_odd_view_sizes(shapes, spatial_dims, shared):
    model = multistream_tiny(
        num_classes=3,
        num_streams=len(shapes),
        spatial_dims=spatial_dims,
        shared_weights=shared,
    )
    views = random_views(shapes)
    variables = init(model, views)
    logits = model.apply(variables, views, train=False)
    assert logits.shape == (shapes[0][0], 3)
    assert np.isfinite(logits).all()
    names = set(variables["params"])
    expected = {"backbone"} if shared else {f"backbone_{i}" for i in range(len(shapes))}
    assert names == expected | {"head"}


def test_separate_weights_cost_one_backbone_per_extra_stream():
    shapes = ((2, 9, 9, 1), (2, 7, 7, 1), (2, 5, 5, 1))
    views = random_views(shapes)

    def num_params(module, x):
        variables = jax.eval_shape(
            lambda: module.init(random_key(0), x, train=False)
        )
        return count(variables["params"])

    backbone = num_params(ConvBackbone(widths=WIDTHS), views[0])
    for hidden in (0, 6):
        separate = num_params(
            multistream_tiny(num_classes=2, num_streams=3, fusion_hidden=hidden), views
        )
        shared = num_params(
            multistream_tiny(
                num_classes=2, num_streams=3, fusion_hidden=hidden, shared_weights=True
            ),
            views,
        )
        # The head sees 3 * widths[-1] features in both: only backbones differ.
        assert separate == shared + 2 * backbone
        fused = 3 * WIDTHS[-1]
        head = (fused * hidden + hidden + hidden * 2 + 2) if hidden else fused * 2 + 2
        assert shared == backbone + head


def reference_logits(variables, views, backbone_names, fusion=False):
    """The late-fusion forward pass written out: each view through a plain
    ConvBackbone with the named parameters, concatenate, (hidden), head."""
    params, stats = variables["params"], variables["batch_stats"]
    features = [
        ConvBackbone(widths=WIDTHS, spatial_dims=view.ndim - 2).apply(
            {"params": params[name], "batch_stats": stats[name]}, view, train=False
        )
        for name, view in zip(backbone_names, views)
    ]
    x = jnp.concatenate(features, axis=-1)
    if fusion:
        x = jax.nn.relu(x @ params["fusion"]["kernel"] + params["fusion"]["bias"])
    return x @ params["head"]["kernel"] + params["head"]["bias"]


def perturbed_stats(variables, seed=3):
    """Random running statistics, so evaluation-mode BatchNorm is not the
    identity and a mix-up of statistics between streams shows."""
    rng = np.random.default_rng(seed)
    paths_leaves, tree = jax.tree_util.tree_flatten_with_path(variables["batch_stats"])
    leaves = [
        leaf * rng.uniform(0.5, 2.0, leaf.shape)
        if path[-1].key == "var"
        else leaf + rng.normal(0.0, 0.1, leaf.shape)
        for path, leaf in paths_leaves
    ]
    return {**variables, "batch_stats": jax.tree.unflatten(tree, leaves)}


def test_shared_backbone_is_one_conv_backbone_applied_to_every_view():
    views = random_views(((2, 9, 9, 1), (2, 6, 5, 1), (2, 7, 7, 1)))
    model = multistream_tiny(
        num_classes=4, num_streams=3, shared_weights=True, fusion_hidden=5
    )
    variables = perturbed_stats(init(model, views, 1))
    logits = model.apply(variables, views, train=False)
    assert np.abs(np.asarray(logits[0] - logits[1])).max() > 1e-3  # not all-ReLU-dead
    np.testing.assert_allclose(
        logits,
        reference_logits(variables, views, ["backbone"] * 3, fusion=True),
        rtol=1e-5,
        atol=1e-5,
    )


def test_separate_backbones_each_see_their_own_view():
    views = random_views(((2, 5, 7, 3, 1), (2, 5, 7, 3, 1)))
    model = multistream_tiny(num_classes=3, num_streams=2, spatial_dims=3)
    variables = perturbed_stats(init(model, views, 2))
    logits = model.apply(variables, views, train=False)
    assert np.abs(np.asarray(logits[0] - logits[1])).max() > 1e-3  # not all-ReLU-dead
    np.testing.assert_allclose(
        logits,
        reference_logits(variables, views, ["backbone_0", "backbone_1"]),
        rtol=1e-5,
        atol=1e-5,
    )
    # the streams are not interchangeable: swapping the views changes the output
    swapped = model.apply(variables, views[::-1], train=False)
    assert np.abs(np.asarray(swapped - logits)).max() > 1e-3


@pytest.mark.parametrize("shared", [False, True])
def test_gradients_reach_every_stream(shared):
    views = random_views(((4, 7, 7, 1), (4, 5, 5, 1)))
    model = multistream_tiny(num_classes=2, num_streams=2, shared_weights=shared)
    variables = init(model, views)
    target = jnp.asarray(np.random.default_rng(5).normal(size=(4, 2)), jnp.float32)

    def loss(params, views):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            views,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum((logits - target) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    param_grads, view_grads = grad(variables["params"], views)
    for grad in view_grads:
        assert np.abs(np.asarray(grad)).max() > 0
    names = ["backbone"] if shared else ["backbone_0", "backbone_1"]
    for name in names:
        for leaf in jax.tree.leaves(param_grads[name]):
            assert np.abs(np.asarray(leaf)).max() > 0, name


def test_frozen_stages_keep_their_batch_statistics_in_training():
    views = random_views(((4, 8, 8, 1), (4, 6, 6, 1)))
    views = tuple(v * 3 + 2 for v in views)
    model = multistream_tiny(num_classes=2, num_streams=2, frozen_stages=1)
    variables = init(model, views)
    _, updates = model.apply(variables, views, train=True, mutable=["batch_stats"])
    for name in ("backbone_0", "backbone_1"):
        before, after = variables["batch_stats"][name], updates["batch_stats"][name]
        for frozen in ("stem_norm", "stage0_block0"):
            for a, b in zip(
                jax.tree.leaves(before[frozen]), jax.tree.leaves(after[frozen])
            ):
                np.testing.assert_array_equal(a, b)
        moved = zip(
            jax.tree.leaves(before["stage1_block0"]),
            jax.tree.leaves(after["stage1_block0"]),
        )
        assert all(not np.allclose(a, b) for a, b in moved)


def test_rejects_wrong_views_with_one_line():
    model = multistream_tiny(num_classes=2, num_streams=2)
    key, image = random_key(0), jnp.ones((1, 8, 8, 1))
    cases = [
        ((image,), "got 1 views"),
        ((image, jnp.ones((1, 8, 8, 8, 1))), "view 1 should have rank 4"),
        ((image, jnp.ones((2, 8, 8, 1))), "different batch sizes"),
    ]
    for views, match in cases:
        with pytest.raises(ValueError, match=match) as error:
            model.init(key, views, train=False)
        assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="tuple of 2 views"):
        model.init(key, image, train=False)
    with pytest.raises(ValueError, match="model.spatial_dims"):
        multistream_tiny(num_classes=2, num_streams=2, spatial_dims=(2, 2, 3)).init(
            key, (image, image), train=False
        )
    with pytest.raises(ValueError, match="shared backbone needs views"):
        multistream_tiny(
            num_classes=2, num_streams=2, spatial_dims=(2, 3), shared_weights=True
        ).init(key, (image, jnp.ones((1, 8, 8, 8, 1))), train=False)


def test_presets_build():
    views = (jnp.ones((1, 16, 16, 1)), jnp.ones((1, 16, 16, 1)))
    for preset in (multistream_small, multistream_resnet18):
        variables = jax.eval_shape(
            lambda p=preset: p(num_classes=2, num_streams=2).init(
                random_key(0), views, train=False
            )
        )
        assert {"backbone_0", "backbone_1", "head"} <= set(variables["params"])
    assert MultistreamCNN(num_classes=2, num_streams=1).shared_weights is False
