"""Every backbone-capable model declares parameter groups that name real
subtrees of its parameters, and the declaration decides what transfer learning
freezes."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from medjax.engine import transfer
from medjax.models import autoencoder as ae
from medjax.models import cnn, dbn, mlp, multistream, unet
from medjax.models.groups import groups_of
from medjax.runtime import random_key

X = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
VIEWS = (X, jax.ShapeDtypeStruct((2, 6, 6, 1), jnp.float32))

# model, input, top-level names feature_extractor freezes, stage count
CASES = {
    "resnet_tiny": (cnn.resnet_tiny(num_classes=2), X, {"backbone"}, 3),
    "multistream_tiny": (
        multistream.multistream_tiny(num_classes=2, num_streams=2, fusion_hidden=3),
        VIEWS,
        {"backbone_0", "backbone_1"},
        2,
    ),
    "multistream_tiny_shared": (
        multistream.multistream_tiny(num_classes=2, num_streams=2, shared_weights=True),
        VIEWS,
        {"backbone"},
        2,
    ),
    "unet_tiny": (
        unet.unet_tiny(num_classes=2),
        X,
        {"down_0", "down_1", "bottleneck"},
        3,
    ),
    "autoencoder_tiny": (ae.autoencoder_tiny(), X, {"encoder"}, 1),
    "dense_autoencoder_tiny": (ae.dense_autoencoder_tiny(), X, {"encoder"}, 1),
    "stacked_autoencoder_tiny": (
        ae.stacked_autoencoder_tiny(),
        X,
        {"encoder_0", "encoder_1", "encoder_2"},
        3,
    ),
    "encoder_classifier_tiny": (
        ae.encoder_classifier_tiny(num_classes=2),
        X,
        {"encoder"},
        1,
    ),
    "dbn_tiny": (dbn.dbn_tiny(num_classes=2), X, {"layer_0", "layer_1"}, 2),
}


def params_of(model, x):
    return jax.eval_shape(partial(model.init, train=False), random_key(0), x)[
        "params"
    ]


@pytest.mark.parametrize("name", sorted(CASES))
def test_declared_stages_name_real_subtrees_and_freeze_the_backbone(name):
    model, x, frozen_tops, num_stages = CASES[name]
    groups = groups_of(model)
    assert groups.num_stages == num_stages
    paths = list(traverse_util.flatten_dict(params_of(model, x)))
    for backbone in groups.backbones:
        for stage in backbone.stages:
            for subtree in stage:
                if subtree.endswith("stem_norm"):
                    continue  # stem BatchNorm: present, but checked via stem_conv
                prefix = tuple(subtree.split("/"))
                assert any(p[: len(prefix)] == prefix for p in paths), subtree
    labels = traverse_util.flatten_dict(
        transfer.label_parameters(params_of(model, x), groups, "feature_extractor")
    )
    assert {p[0] for p, label in labels.items() if label == "frozen"} == frozen_tops
    assert all(
        label != "frozen" for p, label in labels.items() if p[0] not in frozen_tops
    )


def test_models_without_a_declaration_only_finetune_whole():
    model = mlp.mlp_tiny(num_outputs=2)
    assert not groups_of(model).backbones
    assert transfer.prepare_model(model, "finetune") is model
    with pytest.raises(Exception, match="declares no backbone"):
        transfer.prepare_model(model, "feature_extractor")


def test_batchnorm_encoder_without_frozen_statistics_is_refused():
    with pytest.raises(Exception, match="cannot freeze the normalisation"):
        transfer.prepare_model(
            ae.encoder_classifier_tiny(num_classes=2, norm="batch"), "feature_extractor"
        )
    group = ae.encoder_classifier_tiny(num_classes=2, norm="group")
    assert transfer.prepare_model(group, "feature_extractor") is group


def test_unet_frozen_encoder_levels_keep_their_statistics():
    model = transfer.prepare_model(unet.unet_tiny(num_classes=2), "finetune", 2)
    assert model.frozen_stages == 1  # 3 stages, the last 2 train
    x = jnp.asarray(
        np.random.default_rng(0).normal(3.0, 2.0, (2, 8, 8, 1)), jnp.float32
    )
    variables = model.init(random_key(0), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before, after = variables["batch_stats"], updates["batch_stats"]
    for leaf_before, leaf_after in zip(
        jax.tree.leaves(before["down_0"]), jax.tree.leaves(after["down_0"])
    ):
        np.testing.assert_array_equal(leaf_after, leaf_before)
    for name in ("down_1", "bottleneck", "up_0"):
        assert any(
            np.any(a != b)
            for a, b in zip(jax.tree.leaves(after[name]), jax.tree.leaves(before[name]))
        ), name
