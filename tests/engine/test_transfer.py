"""Transfer learning: loading saved subtrees by path, freezing through optax
masking (by the parameter groups a model declares) and the model's frozen
BatchNorm, backbone learning-rate factors."""

import glob
import json
import os
import shutil
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from flax import traverse_util

from medjax.engine import sharding, transfer
from medjax.engine.checkpoint import Checkpoints
from medjax.engine.state import create_train_state
from medjax.engine.step import train_step
from medjax.errors import ConfigError, RunDirectoryError
from medjax.models.cnn import resnet_tiny
from medjax.models.groups import Backbone, ParameterGroups, Transferable, groups_of
from medjax.runtime import random_key
from medjax.tasks.classification.task import ClassificationTask

SAMPLE = jnp.zeros((1, 12, 12, 1))


def init(model, seed: int) -> dict:
    return dict(model.init(random_key(seed), SAMPLE, train=False))


def random_variables(model, seed: int) -> dict:
    """Variables shaped like ``model``'s, with random values (as good as an init
    for a loading target, and much cheaper than a Flax init on a busy CPU)."""
    shapes = jax.eval_shape(partial(model.init, train=False), random_key(0), SAMPLE)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), dict(shapes)
    )


def flat(tree) -> dict[str, np.ndarray]:
    return {
        k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()
    }


def assert_trees_equal(actual, expected):
    actual, expected = flat(actual), flat(expected)
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A run of model A (resnet_tiny, 3 classes) with steps 1 (best by auroc) and
    2 (latest), whose params and BatchNorm statistics differ, and a config.yaml."""
    run_dir = str(tmp_path_factory.mktemp("source_run"))
    model = resnet_tiny(num_classes=3)
    state = create_train_state(model, optax.adam(1e-3), SAMPLE, random_key(0))
    rng = np.random.default_rng(0)
    # Non-trivial statistics (init has mean 0, var 1 everywhere).
    stats = jax.tree.map(
        lambda x: jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype),
        state.batch_stats,
    )
    saved = {
        1: (state.params, stats),
        2: (
            jax.tree.map(lambda x: x + 1.0, state.params),
            jax.tree.map(lambda x: x * 3.0, stats),
        ),
    }
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), best_metric="auroc")
    for step, auroc in ((1, 0.9), (2, 0.7)):
        params, batch_stats = saved[step]
        checkpoints.save(
            state.replace(
                step=jnp.asarray(step), params=params, batch_stats=batch_stats
            ),
            {"model": "resnet_tiny"},
            metrics={"auroc": auroc},
        )
    checkpoints.wait()
    checkpoints.close()
    with open(os.path.join(run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump({"trainer": {"best_metric": "auroc", "best_mode": "max"}}, f)
    return run_dir, saved


def subtree(tree, name):
    return {"params": tree[0][name], "batch_stats": tree[1][name]}


# -- loading --------------------------------------------------------------------


def test_load_backbone_into_model_with_other_head(source_run):
    run_dir, saved = source_run
    target = init(resnet_tiny(num_classes=5), seed=1)
    loaded, report = transfer.load_pretrained(target, run_dir, {"backbone": "backbone"})

    assert report.step == 1  # best by auroc (0.9 > 0.7), not the latest
    assert_trees_equal(
        {
            "params": loaded["params"]["backbone"],
            "batch_stats": loaded["batch_stats"]["backbone"],
        },
        subtree(saved[1], "backbone"),
    )
    assert_trees_equal(loaded["params"]["head"], target["params"]["head"])
    assert loaded["params"]["head"]["kernel"].shape == (8, 5)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(loaded))

    params, stats = flat(saved[1][0]["backbone"]), flat(saved[1][1]["backbone"])
    assert len(report.loaded) == len(params) + len(stats) == 55
    assert "params/backbone/stem_conv/kernel" in report.loaded
    assert "batch_stats/backbone/stage2_block0/BatchNorm_2/var" in report.loaded
    assert report.loaded_parameters == sum(x.size for x in params.values())
    assert report.loaded_values == report.loaded_parameters + sum(
        x.size for x in stats.values()
    )
    assert report.total_parameters == report.loaded_parameters + 8 * 5 + 5
    assert sorted(report.untouched) == ["params/head/bias", "params/head/kernel"]
    assert report.missing == report.mismatched == report.unused == []
    summary = report.summary()
    assert summary.startswith("loaded 55 arrays")
    assert "params/head/kernel" in summary and "0 shape mismatches" in summary
    assert json.loads(json.dumps(report.to_dict()))["step"] == 1


@pytest.mark.parametrize(
    "suffix, step",
    [
        (":latest", 2),
        (":2", 2),
        (":1", 1),
        ("/checkpoints/2", 2),
        ("/checkpoints", 1),  # the run's config.yaml still ranks the steps
    ],
)
def test_checkpoint_syntax_picks_the_step(source_run, suffix, step):
    run_dir, saved = source_run
    target = init(resnet_tiny(num_classes=3), seed=1)
    loaded, report = transfer.load_pretrained(target, run_dir + suffix)
    assert report.step == step
    assert (
        report.missing == report.mismatched == report.untouched == report.unused == []
    )
    assert_trees_equal(loaded["params"], saved[step][0])
    assert_trees_equal(loaded["batch_stats"], saved[step][1])


def test_whole_tree_reports_head_shape_mismatch(source_run):
    run_dir, saved = source_run
    target = init(resnet_tiny(num_classes=5), seed=1)
    loaded, report = transfer.load_pretrained(target, run_dir)
    assert sorted(report.mismatched) == [
        ("params/head/bias", (5,), (3,)),
        ("params/head/kernel", (8, 5), (8, 3)),
    ]
    assert report.to_dict()["mismatched"][0]["checkpoint_shape"] in ([3], [8, 3])
    assert_trees_equal(loaded["params"]["head"], target["params"]["head"])
    assert_trees_equal(loaded["params"]["backbone"], saved[1][0]["backbone"])
    assert "2 shape mismatches: params/head/" in report.summary()


def test_other_widths_and_depths_report_mismatched_missing_unused(source_run):
    run_dir, saved = source_run
    # Source: widths (4, 8, 8), blocks (1, 2, 1).
    model = resnet_tiny(num_classes=3, widths=(4, 8, 16), blocks_per_stage=(2, 1, 1))
    target = random_variables(model, seed=2)
    loaded, report = transfer.load_pretrained(target, run_dir, {"backbone": "backbone"})

    mismatched = {path: (t, s) for path, t, s in report.mismatched}
    assert mismatched["params/backbone/stage2_block0/Conv_0/kernel"] == (
        (3, 3, 8, 16),
        (3, 3, 8, 8),
    )
    assert mismatched["batch_stats/backbone/stage2_block0/BatchNorm_1/mean"] == (
        (16,),
        (8,),
    )
    assert all("stage2_block0" in path for path in mismatched)
    assert len(mismatched) == len(
        flat(target["params"]["backbone"]["stage2_block0"])
    ) + len(flat(target["batch_stats"]["backbone"]["stage2_block0"]))
    assert "params/backbone/stage0_block1/Conv_0/kernel" in report.missing
    assert all("stage0_block1" in path for path in report.missing)
    assert "params/backbone/stage1_block1/Conv_1/kernel" in report.unused
    assert all("stage1_block1" in path for path in report.unused)

    got, init_params = loaded["params"]["backbone"], target["params"]["backbone"]
    assert_trees_equal(got["stage2_block0"], init_params["stage2_block0"])
    assert_trees_equal(got["stage0_block1"], init_params["stage0_block1"])
    assert_trees_equal(got["stage1_block0"], saved[1][0]["backbone"]["stage1_block0"])
    assert_trees_equal(got["stem_conv"], saved[1][0]["backbone"]["stem_conv"])


def test_one_source_backbone_into_two_streams_with_dtype_cast(source_run):
    run_dir, saved = source_run
    single = random_variables(resnet_tiny(num_classes=3), seed=3)
    target = {
        "params": {
            "backbone_0": single["params"]["backbone"],
            "backbone_1": jax.tree.map(
                lambda x: x.astype(jnp.bfloat16), single["params"]["backbone"]
            ),
            "head": single["params"]["head"],
        },
        "batch_stats": {
            "backbone_0": single["batch_stats"]["backbone"],
            "backbone_1": single["batch_stats"]["backbone"],
        },
    }
    loaded, report = transfer.load_pretrained(
        target, run_dir, {"backbone_0": "backbone", "backbone_1": "backbone"}
    )
    assert len(report.loaded) == 2 * 55
    assert_trees_equal(loaded["params"]["backbone_0"], saved[1][0]["backbone"])
    kernel = loaded["params"]["backbone_1"]["stem_conv"]["kernel"]
    assert kernel.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(kernel),
        np.asarray(saved[1][0]["backbone"]["stem_conv"]["kernel"].astype(jnp.bfloat16)),
    )
    assert_trees_equal(loaded["batch_stats"]["backbone_1"], saved[1][1]["backbone"])


def test_loaded_arrays_keep_the_targets_replicated_sharding(source_run):
    run_dir, saved = source_run
    mesh = sharding.data_mesh()
    assert mesh.devices.size == 4  # tests/conftest.py forces 4 CPU devices
    replicated = sharding.replicated(mesh)
    target = jax.device_put(random_variables(resnet_tiny(num_classes=3), 5), replicated)
    loaded, report = transfer.load_pretrained(target, run_dir, {"backbone": "backbone"})
    assert len(report.loaded) == 55
    for leaf in jax.tree.leaves(loaded):
        assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim)
    assert_trees_equal(loaded["params"]["backbone"], saved[1][0]["backbone"])


def test_longest_target_prefix_wins(source_run):
    run_dir, saved = source_run
    target = random_variables(resnet_tiny(num_classes=3), seed=4)
    loaded, report = transfer.load_pretrained(
        target,
        run_dir,
        {"backbone": "backbone", "backbone/stage2_block0": "backbone/stage1_block1"},
    )
    source = saved[1][0]["backbone"]
    got = loaded["params"]["backbone"]
    assert_trees_equal(
        got["stage2_block0"]["Conv_0"], source["stage1_block1"]["Conv_0"]
    )
    assert_trees_equal(got["stage1_block1"], source["stage1_block1"])
    assert_trees_equal(got["stem_conv"], source["stem_conv"])
    # The projection of a strided block has no counterpart in stage1_block1.
    assert sorted(report.missing) == [
        "batch_stats/backbone/stage2_block0/BatchNorm_2/mean",
        "batch_stats/backbone/stage2_block0/BatchNorm_2/var",
        "params/backbone/stage2_block0/BatchNorm_2/bias",
        "params/backbone/stage2_block0/BatchNorm_2/scale",
        "params/backbone/stage2_block0/Conv_2/kernel",
    ]
    assert_trees_equal(
        got["stage2_block0"]["Conv_2"],
        target["params"]["backbone"]["stage2_block0"]["Conv_2"],
    )
    assert len(report.unused) == len(flat(source["stage2_block0"])) + len(
        flat(saved[1][1]["backbone"]["stage2_block0"])
    )
    assert all("backbone/stage2_block0/" in path for path in report.unused)


def test_load_errors(source_run, tmp_path):
    run_dir, _ = source_run
    target = init(resnet_tiny(num_classes=3), seed=1)
    with pytest.raises(
        ConfigError, match=r"source prefix 'encoder' .*\['backbone', 'head'\]"
    ):
        transfer.load_pretrained(target, run_dir, {"backbone": "encoder"})
    with pytest.raises(
        ConfigError, match=r"target prefix 'trunk' .*\['backbone', 'head'\]"
    ):
        transfer.load_pretrained(target, run_dir, {"trunk": "backbone"})
    with pytest.raises(ConfigError, match="no such directory"):
        transfer.load_pretrained(target, str(tmp_path / "missing_run"))
    with pytest.raises(ConfigError, match="no checkpoints"):
        transfer.load_pretrained(target, str(tmp_path))
    with pytest.raises(ConfigError, match=r"step 7 not saved; saved: \[1, 2\]"):
        transfer.load_pretrained(target, run_dir + ":7")
    other = random_variables(resnet_tiny(num_classes=3, widths=(6, 10, 10)), seed=1)
    with pytest.raises(ConfigError, match="nothing loaded.*differ in shape"):
        transfer.load_pretrained(other, run_dir, {"backbone": "backbone"})


@pytest.mark.parametrize("damage", ["truncated arrays", "garbage metadata"])
def test_a_damaged_source_checkpoint_is_one_error_naming_it(
    source_run, tmp_path, damage
):
    copy = str(tmp_path / "run")
    shutil.copytree(source_run[0], copy)
    step_dir = os.path.join(copy, "checkpoints", "1")
    if damage == "truncated arrays":
        chunks = glob.glob(f"{step_dir}/state/**/d/*", recursive=True)
        assert chunks
        for path in chunks:
            os.truncate(path, os.path.getsize(path) // 2)
    else:
        with open(f"{step_dir}/state/_METADATA", "w") as f:
            f.write("{not json")
    target = init(resnet_tiny(num_classes=3), seed=1)
    with pytest.raises(RunDirectoryError) as error:
        transfer.load_pretrained(target, copy + ":1", {"backbone": "backbone"})
    message = str(error.value)
    assert message.startswith(f"transfer.checkpoint={copy}:1: {step_dir}: unreadable")
    assert "\n" not in message


# -- freezing and learning rates -----------------------------------------------


def labels_of(tree) -> dict[str, str]:
    return traverse_util.flatten_dict(tree, sep="/")


HAND_PARAMS = {
    "backbone_0": {
        "stem_conv": {"kernel": np.zeros(2)},
        "stem_norm": {"scale": np.zeros(2)},
        "stage0_block0": {"Conv_0": {"kernel": np.zeros(2)}},
        "stage1_block0": {"Conv_0": {"kernel": np.zeros(2)}},
        "stage2_block0": {"Conv_0": {"kernel": np.zeros(2)}},
        "stage2_block1": {"Conv_0": {"kernel": np.zeros(2)}},
    },
    "backbone_1": {"Dense_0": {"kernel": np.zeros(2)}},
    "encoder": {"Dense_0": {"kernel": np.zeros(2), "bias": np.zeros(2)}},
    "encoder_0": {"kernel": np.zeros(2)},
    "head": {"kernel": np.zeros(2), "bias": np.zeros(2)},
}
# Declared, not found by names: "encoder_0" is head because no backbone lists it.
HAND_GROUPS = ParameterGroups(
    (
        Backbone(
            "backbone_0",
            (
                (
                    "backbone_0/stem_conv",
                    "backbone_0/stem_norm",
                    "backbone_0/stage0_block0",
                ),
                ("backbone_0/stage1_block0",),
                ("backbone_0/stage2_block0", "backbone_0/stage2_block1"),
            ),
        ),
        Backbone("backbone_1", (("backbone_1",),)),
        Backbone("encoder", (("encoder",),)),
    )
)
HEADS = {"encoder_0/kernel", "head/kernel", "head/bias"}


@pytest.mark.parametrize(
    "mode, stages, frozen",
    [
        ("scratch", None, set()),
        ("finetune", None, set()),
        (
            "feature_extractor",
            None,
            {
                "backbone_0/stem_conv/kernel",
                "backbone_0/stem_norm/scale",
                "backbone_0/stage0_block0/Conv_0/kernel",
                "backbone_0/stage1_block0/Conv_0/kernel",
                "backbone_0/stage2_block0/Conv_0/kernel",
                "backbone_0/stage2_block1/Conv_0/kernel",
                "backbone_1/Dense_0/kernel",
                "encoder/Dense_0/kernel",
                "encoder/Dense_0/bias",
            },
        ),
        (
            "finetune",
            1,  # last stage of backbone_0; the one-stage backbones train whole
            {
                "backbone_0/stem_conv/kernel",
                "backbone_0/stem_norm/scale",
                "backbone_0/stage0_block0/Conv_0/kernel",
                "backbone_0/stage1_block0/Conv_0/kernel",
            },
        ),
        (
            "finetune",
            2,
            {
                "backbone_0/stem_conv/kernel",
                "backbone_0/stem_norm/scale",
                "backbone_0/stage0_block0/Conv_0/kernel",
            },
        ),
        ("finetune", 3, set()),  # all three stages: the stem trains too
        (
            "finetune",
            0,
            {
                "backbone_0/stem_conv/kernel",
                "backbone_0/stem_norm/scale",
                "backbone_0/stage0_block0/Conv_0/kernel",
                "backbone_0/stage1_block0/Conv_0/kernel",
                "backbone_0/stage2_block0/Conv_0/kernel",
                "backbone_0/stage2_block1/Conv_0/kernel",
                "backbone_1/Dense_0/kernel",
                "encoder/Dense_0/kernel",
                "encoder/Dense_0/bias",
            },
        ),
    ],
)
def test_labels_of_hand_written_tree(mode, stages, frozen):
    labels = labels_of(
        transfer.label_parameters(HAND_PARAMS, HAND_GROUPS, mode, stages)
    )
    assert labels.keys() == labels_of(HAND_PARAMS).keys()
    expected = {
        path: "head" if path in HEADS else "frozen" if path in frozen else "backbone"
        for path in labels
    }
    assert labels == expected


def test_declared_stages_of_a_resnet():
    model = resnet_tiny(num_classes=3)  # widths (4, 8, 8), blocks (1, 2, 1)
    (backbone,) = groups_of(model).backbones
    assert backbone.stages == (
        ("backbone/stem_conv", "backbone/stem_norm", "backbone/stage0_block0"),
        ("backbone/stage1_block0", "backbone/stage1_block1"),
        ("backbone/stage2_block0",),
    )
    assert backbone.stage_of(("backbone", "stem_norm", "scale")) == 0
    assert backbone.stage_of(("backbone", "stage1_block1", "Conv_0", "kernel")) == 1
    assert backbone.stage_of(("head", "kernel")) is None
    shapes = jax.eval_shape(partial(model.init, train=False), random_key(0), SAMPLE)
    labels = labels_of(
        transfer.label_parameters(shapes["params"], groups_of(model), "finetune", 1)
    )
    assert labels["backbone/stage1_block1/Conv_0/kernel"] == "frozen"
    assert labels["backbone/stem_conv/kernel"] == "frozen"
    assert labels["backbone/stage2_block0/Conv_2/kernel"] == "backbone"
    assert labels["head/kernel"] == "head"
    assert set(labels.values()) == {"frozen", "backbone", "head"}


def test_mode_and_stage_errors():
    with pytest.raises(
        ConfigError,
        match=r"^transfer.mode: expected one of \('scratch', 'feature_extractor', "
        r"'finetune'\), got 'linear_probe'$",
    ):
        transfer.label_parameters(HAND_PARAMS, HAND_GROUPS, "linear_probe")
    with pytest.raises(
        ConfigError, match=r"expected 0..3 \(backbone_0 has 3 stages\), got 4"
    ):
        transfer.label_parameters(HAND_PARAMS, HAND_GROUPS, "finetune", 4)
    sgd = optax.sgd(0.1)
    with pytest.raises(ConfigError, match="only used with transfer.mode=finetune"):
        transfer.transfer_optimizer(sgd, HAND_GROUPS, "feature_extractor", 1)
    with pytest.raises(ConfigError, match="integer >= 0, got -1"):
        transfer.transfer_optimizer(sgd, HAND_GROUPS, "finetune", -1)
    with pytest.raises(ConfigError, match="backbone_lr_factor"):
        transfer.transfer_optimizer(sgd, HAND_GROUPS, "finetune", backbone_lr_factor=0)
    with pytest.raises(ConfigError, match="declares no backbone"):
        transfer.transfer_optimizer(sgd, ParameterGroups(), "feature_extractor")
    with pytest.raises(ConfigError, match="transfer.mode"):
        transfer.frozen_stages_for("probe", 4, None)
    with pytest.raises(ConfigError, match="got 5"):
        transfer.frozen_stages_for("finetune", 4, 5)


@pytest.mark.parametrize(
    "mode, stages, expected",
    [
        ("feature_extractor", None, 4),
        ("finetune", 1, 3),
        ("finetune", 4, 0),
        ("finetune", None, 0),
        ("scratch", None, 0),
    ],
)
def test_frozen_stages_for(mode, stages, expected):
    assert transfer.frozen_stages_for(mode, 4, stages) == expected


TASK = ClassificationTask(num_classes=3)


def batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.normal(size=(6, 12, 12, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 3, size=6)),
        "valid": jnp.ones(6, bool),
    }


def train(model, tx, steps: int):
    """The initial state and the state after ``steps`` real training steps."""
    state = create_train_state(model, tx, SAMPLE, random_key(4))
    step_fn = jax.jit(partial(train_step, task=TASK))
    key, new = random_key(5), state
    for i in range(steps):
        new, _ = step_fn(new, batch(i), key)
    return state, new


def changed_everywhere(before, after) -> bool:
    """Every leaf differs somewhere."""
    before, after = flat(before), flat(after)
    return all(np.any(before[k] != after[k]) for k in before)


def test_feature_extractor_keeps_backbone_bit_identical():
    mode = "feature_extractor"
    model = transfer.prepare_model(resnet_tiny(num_classes=3), mode)
    assert model.frozen_stages == 3
    tx = transfer.transfer_optimizer(
        optax.adamw(1e-2, weight_decay=0.1), groups_of(model), mode
    )
    before, after = train(model, tx, steps=3)
    assert int(after.step) == 3
    assert_trees_equal(after.params["backbone"], before.params["backbone"])
    assert_trees_equal(after.batch_stats["backbone"], before.batch_stats["backbone"])
    assert changed_everywhere(before.params["head"], after.params["head"])


def test_finetune_last_stage_freezes_stem_and_first_stages():
    mode, trainable = "finetune", 1
    model = transfer.prepare_model(resnet_tiny(num_classes=3), mode, trainable)
    assert model.frozen_stages == 2
    tx = transfer.transfer_optimizer(
        optax.adamw(1e-2, weight_decay=0.1), groups_of(model), mode, trainable
    )
    before, after = train(model, tx, steps=3)
    frozen = [
        "stem_conv",
        "stem_norm",
        "stage0_block0",
        "stage1_block0",
        "stage1_block1",
    ]
    for name in frozen:
        assert_trees_equal(
            after.params["backbone"][name], before.params["backbone"][name]
        )
        if name in before.batch_stats["backbone"]:
            assert_trees_equal(
                after.batch_stats["backbone"][name],
                before.batch_stats["backbone"][name],
            )
    assert changed_everywhere(
        before.params["backbone"]["stage2_block0"],
        after.params["backbone"]["stage2_block0"],
    )
    assert changed_everywhere(
        before.batch_stats["backbone"]["stage2_block0"],
        after.batch_stats["backbone"]["stage2_block0"],
    )
    assert changed_everywhere(before.params["head"], after.params["head"])


def test_backbone_lr_factor_scales_backbone_updates_only():
    model = resnet_tiny(num_classes=3)
    base = optax.sgd(0.5)  # no momentum: one step's update is -0.5 * gradient
    groups = groups_of(model)
    before, reference = train(
        model, transfer.transfer_optimizer(base, groups, "finetune"), 1
    )
    _, slowed = train(
        model,
        transfer.transfer_optimizer(base, groups, "finetune", backbone_lr_factor=0.1),
        1,
    )
    start = flat(before.params)
    ref_delta = {
        k: v.astype(np.float64) - start[k] for k, v in flat(reference.params).items()
    }
    slow_delta = {
        k: v.astype(np.float64) - start[k] for k, v in flat(slowed.params).items()
    }
    backbone = [k for k in start if k.startswith("backbone/")]
    assert max(np.abs(ref_delta[k]).max() for k in backbone) > 1e-3
    for key in backbone:
        np.testing.assert_allclose(
            slow_delta[key], 0.1 * ref_delta[key], rtol=1e-4, atol=1e-6, err_msg=key
        )
    for key in ("head/kernel", "head/bias"):
        assert np.abs(ref_delta[key]).max() > 1e-3
        np.testing.assert_array_equal(slow_delta[key], ref_delta[key])


class TwoTrunks(nn.Module, Transferable):
    """A model whose names no pattern knows: two trunk stages and a classifier,
    declared as backbone and head; the first trunk has running statistics that
    ``frozen`` holds fixed."""

    frozen: int = 0

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups((Backbone("trunk", (("first",), ("second",))),))

    def with_frozen_statistics(self, num_stages: int) -> "TwoTrunks":
        return self.clone(frozen=num_stages)

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(4, (3, 3), name="first")(x)
        x = nn.BatchNorm(
            use_running_average=not train or self.frozen >= 1, name="first_norm_is_head"
        )(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.relu(nn.Dense(5, name="second")(x))
        return nn.Dense(3, name="classifier")(x)


@pytest.mark.parametrize(
    "mode, trainable, frozen, trained",
    [
        ("feature_extractor", None, ["first", "second"], ["classifier"]),
        ("finetune", 1, ["first"], ["second", "classifier"]),
        ("finetune", None, [], ["first", "second", "classifier"]),
    ],
)
def test_a_model_declaring_its_groups_is_frozen_by_its_declaration(
    mode, trainable, frozen, trained
):
    model = transfer.prepare_model(TwoTrunks(), mode, trainable)
    assert (
        model.frozen
        == {"feature_extractor": 2, "finetune": 1 if trainable else 0}[mode]
    )
    tx = transfer.transfer_optimizer(
        optax.adam(1e-2), groups_of(model), mode, trainable, backbone_lr_factor=0.5
    )
    before, after = train(model, tx, steps=2)
    for name in frozen:
        assert_trees_equal(after.params[name], before.params[name])
    for name in trained:
        assert changed_everywhere(before.params[name], after.params[name])
    # Undeclared, so head: its parameters train in every mode.
    assert changed_everywhere(
        before.params["first_norm_is_head"], after.params["first_norm_is_head"]
    )
    stats_before = before.batch_stats["first_norm_is_head"]
    stats_after = after.batch_stats["first_norm_is_head"]
    if model.frozen >= 1:  # held by the model, as the declaration asked
        assert_trees_equal(stats_after, stats_before)
    else:
        assert changed_everywhere(stats_before, stats_after)
