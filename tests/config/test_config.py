"""Every file under conf/ composes and instantiates."""

import glob
import os

import flax.linen
import pytest
from hydra import compose, initialize_config_dir

from medjax.config import CONFIG_DIR
from medjax.config.run import build_run
from medjax.config.build import ConfigError, build
from tests.conftest import TINY_SPLITS

GROUPS = ("task", "model", "data", "optim", "trainer", "augment", "experiment")
OPTIONS = [
    (group, os.path.splitext(os.path.basename(path))[0])
    for group in GROUPS
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, group, "*.yaml")))
]


def compose_train(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="train", overrides=list(overrides))


def test_every_config_file_is_covered():
    files = glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True)
    covered = {os.path.join(CONFIG_DIR, g, o + ".yaml") for g, o in OPTIONS}
    covered |= {os.path.join(CONFIG_DIR, n) for n in ("train.yaml", "eval.yaml", "show.yaml", "predict.yaml",
                                                         "register.yaml")}
    # launchers: tests/config/test_launchers.py composes them
    covered |= set(glob.glob(os.path.join(CONFIG_DIR, "hydra", "launcher", "*.yaml")))
    assert set(files) == covered
    assert len(OPTIONS) >= 12


SMALL_SPLITS = {"train": 4, "validation": 2, "test": 2}
# Tasks composed with a model that fits them (the default model is a classifier).
MODEL_FOR_TASK = {"rbm": "rbm", "reconstruction": "autoencoder_small", "anomaly": "autoencoder_small",
                  "description": "captioner_tiny", "lesion_detection": "unet_tiny",
                  "centernet": "centernet_tiny", "faster_rcnn": "faster_rcnn_tiny",
                  "landmarks": "unet_tiny", "landmarks_planes": "planes_tiny"}
# Models composed with a task that feeds them (a multistream model needs views).
TASK_FOR_MODEL = {
    "multistream_small": ["task=lesion_classification", "task.views=[local,context]",
                    "data=phantoms_lesions"],
    "centernet_small": ["task=centernet"],
    "centernet_tiny": ["task=centernet"],
    # Faster R-CNN models read the detection task's options.
    "faster_rcnn_small": ["task=faster_rcnn"],
    "faster_rcnn_small_fpn": ["task=faster_rcnn"],
    "faster_rcnn_tiny": ["task=faster_rcnn"],
    "planes_small": ["task=landmarks_planes", "data=phantoms3d", "data.image_size=16"],
    "planes_tiny": ["task=landmarks_planes", "data=phantoms3d", "data.image_size=16"],
}
# Registration tasks and networks go together: (fixed, moving) pairs in.
MODEL_FOR_TASK.update({"registration": "voxelmorph_tiny", "registration_ctmr": "voxelmorph_tiny"})
TASK_FOR_MODEL.update({
    name: ["task=registration"]
    for name in ("voxelmorph_small", "voxelmorph_tiny", "voxelmorph_diff_small",
                 "voxelmorph_diff_tiny", "affine_net_small", "affine_net_tiny")
})
# Tasks composed with data that has the fields they need, and data with a task
# that reads them (the default task classifies images by their 'label').
DATA_FOR_TASK = {
    "lesion_classification": ["data=phantoms_lesions"],
    # Cine tasks read frames [B, T, H, W, C]: a sequence model.
    "sequence_regression": ["data=phantoms_cine", "model=frame_mean_tiny"],
    "sequence_classification": ["data=phantoms_cine", "model=cnn_lstm_tiny"],
    "landmarks_planes": ["data=phantoms3d", "data.image_size=16"],
}
TASK_FOR_DATA = {
    "breast_cancer": ["task.image_key=features", "model=mlp_small"],
    "decathlon": ["task=segmentation", "task.num_classes=3", "task.class_names=null",
                  "task.mask_key=mask", "model=unet_tiny", "model.spatial_dims=3"],
}


@pytest.mark.parametrize("group, option", OPTIONS)
def test_option_composes_and_builds(group, option, data_dir, tmp_path):
    small = "{" + ",".join(f"{k}:{v}" for k, v in SMALL_SPLITS.items()) + "}"
    overrides = [f"{group}={option}", f"data.data_dir={data_dir}", f"data.split_sizes={small}"]
    expected_train = SMALL_SPLITS["train"]
    if (group, option) == ("data", "decathlon"):  # a folder of the user's: a tiny one
        from tests.data.datasets.decathlon_folder import make_decathlon

        root = tmp_path / "Task09_Tiny"
        make_decathlon(root, count=5)
        overrides = [f"data=decathlon", f"data.root={root}", "data.shape=[8,8,4]"]
        expected_train = 4
    if option == "medmnist" or option.startswith("medmnist_"):  # the user's npz: a tiny one
        from tests.data.datasets.medmnist.files import write_medmnist_npz

        write_medmnist_npz(tmp_path / "medmnist", "pathmnist")
        overrides += [f"data.manual_dir={tmp_path / 'medmnist'}",
                      f"data.data_dir={tmp_path / 'tfds'}", "data.batch_size=2"]
    if group == "task" and option in MODEL_FOR_TASK:
        overrides.append(f"model={MODEL_FOR_TASK[option]}")
    if group == "model" and option in TASK_FOR_MODEL:
        overrides += TASK_FOR_MODEL[option]
    if group == "task" and option in DATA_FOR_TASK:
        overrides += DATA_FOR_TASK[option]
    if group == "data" and option in TASK_FOR_DATA:
        overrides += TASK_FOR_DATA[option]
    if group == "optim":
        overrides.append("trainer.max_steps=1000")
    if group == "trainer":  # the default optimizer warms up for longer than a smoke run
        overrides.append("optim=adam")
    cfg = compose_train(*overrides)
    task, model, tx, data, augment, *_ = build_run(cfg)
    assert isinstance(model, flax.linen.Module)
    if cfg.data._target_.endswith("phantom_lesions"):  # one example per lesion
        from medjax.data.datasets.phantoms.builder import phantom_sources

        exams = phantom_sources(cfg.data.kind, cfg.data.image_size, SMALL_SPLITS,
                                data_dir=data_dir)["train"]
        expected_train = sum(int(exams[i]["lesion_valid"].sum()) for i in range(len(exams)))
    assert len(data.source("train")) == expected_train
    assert callable(tx.update) and task.batch_keys
    assert callable(augment)


def test_predict_config_composes():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="predict", overrides=["run_dir=/r", "input=a.nii.gz", "output=b.nii.gz"])
    assert cfg.checkpoint == "best" and cfg.overlay is None


def test_register_config_composes_into_its_stages():
    from medjax.cli.register import _methods

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="register", overrides=["fixed=a.nii.gz", "moving=b.nii.gz",
                                                         "output=out", "method=[rigid,bspline]"])
    methods = _methods(cfg)
    assert [m.transform for m in methods] == ["rigid", "bspline"]
    assert methods[0].similarity == "mi" and methods[0].levels == (4, 2, 1)
    assert dict(methods[0].similarity_options) == {"num_bins": 32}


def test_eval_config_composes():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="eval", overrides=["run_dir=/some/run"])
    assert cfg.split == "test" and cfg.checkpoint == "best"


def test_show_config_composes_and_builds(data_dir):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="show", overrides=["data=phantoms_tiny", f"data.data_dir={data_dir}"])
    assert cfg.num_examples > 0 and cfg.split == "train"
    augment = build(cfg.augment, "augment")
    assert augment.rotation_probability > 0  # the default shows 'standard'
    assert len(build(cfg.data, "data").source(cfg.split)) == TINY_SPLITS["train"]


def test_targets_outside_medjax_and_optax_are_refused():
    cfg = compose_train()
    cfg.model._target_ = "os.system"
    with pytest.raises(ConfigError, match="model._target_='os.system'"):
        build(cfg.model, "model")


def test_unknown_argument_names_the_group():
    cfg = compose_train("+model.depth=3")
    with pytest.raises(ConfigError, match="^model"):
        build(cfg.model, "model")


def test_epochs_become_steps(data_dir):
    cfg = compose_train("data=phantoms_tiny", f"data.data_dir={data_dir}", "optim=adam",
                        "trainer.max_epochs=3", "trainer.eval_every_epochs=2")
    run = build_run(cfg)
    per_epoch = TINY_SPLITS["train"] // cfg.data.batch_size  # 64 // 8
    assert run.trainer["max_steps"] == 3 * per_epoch
    assert run.trainer["eval_every"] == run.trainer["checkpoint_every"] == 2 * per_epoch
    cfg = compose_train("trainer.max_epochs=0")
    with pytest.raises(ConfigError, match="trainer.max_epochs"):
        build_run(cfg)


def test_balanced_class_weights_come_from_the_training_split(data_dir):
    import numpy as np

    from medjax.data.datasets.phantoms import phantoms

    cfg = compose_train("data=phantoms_tiny", f"data.data_dir={data_dir}",
                        "task.class_weights=balanced")
    run = build_run(cfg)
    labels = phantoms(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir).labels(
        "train", "label")
    counts = np.bincount(labels, minlength=2)
    np.testing.assert_allclose(run.task.class_weights, len(labels) / (2 * counts))


def test_transfer_modes_need_a_checkpoint():
    cfg = compose_train("transfer.mode=finetune")
    with pytest.raises(ConfigError, match="transfer.checkpoint"):
        build_run(cfg)


def test_a_task_and_data_that_do_not_fit_fail_when_the_run_is_built(data_dir, tmp_path):
    from medjax.tasks.base import TaskDataMismatch
    from tests.data.datasets.decathlon_folder import make_decathlon

    cfg = compose_train("task=segmentation", "data=breast_cancer")
    # composed without Hydra's runtime: named by the task's class and the data's name
    with pytest.raises(TaskDataMismatch, match=(
        r"^task=SegmentationTask needs an image field 'image'; "
        r"data=breast_cancer \(Wisconsin diagnostic\) has no field 'image'")):
        build_run(cfg)
    make_decathlon(tmp_path / "Task09_Tiny", count=5)
    cfg = compose_train("data=decathlon", f"data.root={tmp_path / 'Task09_Tiny'}",
                        "data.shape=[8,8,4]")  # images and label maps, no class label
    with pytest.raises(TaskDataMismatch, match=(
        r"^task=ClassificationTask needs a class_label field 'label'; data=decathlon "
        r".*has no field 'label' \(its fields: image 'image', label_map 'mask'\)$")):
        build_run(cfg)


def test_segmentation_spacing_comes_from_the_data(data_dir):
    cfg = compose_train("task=segmentation", "model=unet_tiny", "data=phantoms_tiny",
                        f"data.data_dir={data_dir}", "optim=adam")
    run = build_run(cfg)
    assert run.task.spacing == run.data.spacing == (12.5, 12.5)  # 400 mm over 32 pixels
    assert run.task.batch_keys == ("image", "organ_mask")


def test_a_warmup_longer_than_the_run_is_fitted_and_logged(data_dir, caplog):
    cfg = compose_train("data=phantoms_tiny", f"data.data_dir={data_dir}",
                        "trainer.max_steps=6")  # optim=adamw warms up over 100 steps
    with caplog.at_level("WARNING", logger="medjax"):
        run = build_run(cfg)
    assert [r.getMessage() for r in caplog.records] == [
        "optim.warmup_steps=100 does not fit trainer.max_steps=6: warming up over 3 "
        "steps instead"
    ]
    import jax.numpy as jnp
    import numpy as np

    # Adam's update of a constant gradient is -lr(t) per step (bias-corrected
    # moments give g / |g|; no decay at w = 0): the ramp reaches 3e-3 at step 3
    params, updates_seen = {"w": jnp.zeros(())}, []
    state = run.tx.init(params)
    for _ in range(5):
        updates, state = run.tx.update({"w": jnp.ones(())}, state, params)
        updates_seen.append(-float(updates["w"]))
    np.testing.assert_allclose(updates_seen, [0, 1e-3, 2e-3, 3e-3, 2.25e-3], rtol=1e-4)
    caplog.clear()
    build_run(compose_train("data=phantoms_tiny", f"data.data_dir={data_dir}"))
    assert not caplog.records  # 900 steps: the warm-up fits, nothing said
    assert run.trainer["max_steps"] == 6
