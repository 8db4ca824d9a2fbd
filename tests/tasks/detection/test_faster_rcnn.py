"""FasterRCNNTask: what the model is given, sampling keys, the loss falling
while it overfits one tiny batch through the shared train_step, the
candidates, option checks; and a tiny end-to-end run on 4 forced devices."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.data.datasets.phantoms import torso_schema
from medjax.engine.state import create_train_state
from medjax.engine.step import eval_step, train_step
from medjax.models.detection.faster_rcnn import faster_rcnn_tiny
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.detection.faster_rcnn import SAMPLING_KEY, FasterRCNNTask


def _disc(shape, centre, radius):
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    return ((grid - np.asarray(centre)) ** 2).sum(-1) < radius**2


def _batch(count=4, size=(33, 31)):
    """Images with one or two bright discs, their instance maps and centres."""
    rng = np.random.default_rng(0)
    images = rng.normal(0, 0.1, (count, *size, 1)).astype(np.float32)
    masks = np.zeros((count, *size), np.uint8)
    centres = np.zeros((count, 3, 2), np.float32)
    radii = np.zeros((count, 3), np.float32)
    valid = np.zeros((count, 3), bool)
    for i in range(count):
        for k in range(1 + i % 2):
            centre = rng.uniform(6, np.asarray(size) - 6)
            radius = rng.uniform(2.5, 4.5)
            disc = _disc(size, centre, radius)
            images[i, disc, 0] += 1.0
            masks[i][disc] = k + 1
            centres[i, k], radii[i, k], valid[i, k] = centre, radius, True
    return {
        "image": jnp.asarray(images),
        "lesion_mask": jnp.asarray(masks),
        "lesion_centers": jnp.asarray(centres),
        "lesion_radii": jnp.asarray(radii),
        "lesion_valid": jnp.asarray(valid),
        "valid": jnp.ones(count, bool),
    }


def _task(**options):
    data = types.SimpleNamespace(schema=torso_schema(), spacing=(6.25, 6.25), name="p")
    return FasterRCNNTask(**options).configure(data)


def test_the_model_gets_the_truth_boxes_unless_given_an_image_alone():
    task, batch = _task(), _batch()
    image, boxes, valid = task.inputs(batch)
    assert image.shape == batch["image"].shape
    np.testing.assert_array_equal(valid, batch["lesion_valid"])
    # Box of lesion 1 of image 0: the extent of its disc.
    rows, cols = np.nonzero(np.asarray(batch["lesion_mask"][0]) == 1)
    np.testing.assert_array_equal(
        boxes[0, 0], [rows.min(), cols.min(), rows.max(), cols.max()]
    )
    assert task.inputs({"image": batch["image"]}) is batch["image"]
    assert _task(truth_proposals=False).inputs(batch) is batch["image"]


def test_prepare_batch_gives_each_example_its_own_key():
    task, batch = _task(), _batch()
    prepared = task.prepare_batch(random_key(0), batch, train=True)
    keys = prepared[SAMPLING_KEY]
    assert keys.shape == (4, 2) and keys.dtype == jnp.uint32
    assert len({tuple(k) for k in np.asarray(keys)}) == 4
    again = task.prepare_batch(random_key(0), batch, train=False)[SAMPLING_KEY]
    np.testing.assert_array_equal(keys, again)


def test_loss_is_finite_and_falls_while_overfitting_one_batch():
    task, batch = _task(), _batch()
    model = faster_rcnn_tiny(num_classes=1, max_detections=8)
    tx = optax.adam(3e-3)
    state = jax.jit(lambda k: create_train_state(model, tx, task.inputs(batch), k))(
        random_key(0)
    )
    step = jax.jit(lambda s, b, k: train_step(s, b, k, task=task))
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch, random_key(1))
        losses.append(float(metrics["loss"]))
        assert int(metrics["nonfinite"]) == 0
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    names = {"rpn_objectness", "rpn_box", "roi_classification", "roi_box"}
    assert names <= set(metrics)
    # The loss is the sum of its four terms.
    terms = sum(float(metrics[n]) for n in names)
    np.testing.assert_allclose(float(metrics["loss"]), terms, rtol=1e-5)

    # Evaluation: the loss on inference outputs (no truth proposals) and the
    # detector's own detections as the task's candidates, in one compiled step.
    per_example, host = jax.jit(lambda s, b: eval_step(s, b, task=task))(state, batch)
    assert np.isfinite(np.asarray(per_example["loss"])).all()
    assert host["pred_boxes"].shape == (4, 8, 4)
    assert host["pred_points"].shape == (4, 8, 2)
    assert host["pred_scores"].shape == (4, 8)
    boxes = np.asarray(host["pred_boxes"])
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    np.testing.assert_allclose(host["pred_points"], centres, atol=1e-5)


def test_lesion_classes_come_from_the_class_field():
    task = _task(num_classes=3, class_key="lesion_types")
    batch = {
        "lesion_types": jnp.asarray([[1, 3, 0]]),
        "lesion_valid": jnp.asarray([[True, True, False]]),
    }
    labels = task.truth_labels(batch, batch["lesion_valid"])
    assert labels.tolist() == [[0, 2, 0]]
    assert _task().truth_labels(batch, batch["lesion_valid"]).tolist() == [[0, 0, 0]]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_classes": 3}, "class_key"),
        ({"rpn_negative_iou": 0.8}, "rpn_negative_iou"),
        ({"roi_positive_fraction": 0.0}, "roi_positive_fraction"),
        ({"rpn_samples": 0}, "rpn_samples"),
    ],
)
def test_bad_options_fail_with_one_line(options, message):
    with pytest.raises(ValueError, match=message):
        FasterRCNNTask(**options)


def test_data_without_lesions_fails_in_one_line():
    data = types.SimpleNamespace(schema={"image": None}, spacing=None, name="organs")
    from medjax.data import schema as roles

    data.schema = {"image": roles.image(), "organ_mask": roles.label_map()}
    with pytest.raises(TaskDataMismatch, match="data=organs"):
        FasterRCNNTask().configure(data)


@pytest.mark.slow
def test_a_tiny_run_trains_evaluates_and_scores_froc_on_4_devices(data_dir, tmp_path):
    from tests.cli.test_cli import medjax, records

    assert jax.device_count() == 4
    tiny = [
        "task=faster_rcnn",
        "model=faster_rcnn_tiny",
        "data=phantoms_tiny",
        "trainer=smoke",
        "optim=adam",
        "hydra.run.dir=run",
    ]
    result = medjax("medjax-train", *tiny, data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = os.path.join(tmp_path, "run")
    validation = [r for r in records(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4]
    for record in validation:
        assert 0.0 <= record["cpm"] <= 1.0 and np.isfinite(record["loss"])
        assert {"froc_1_8", "froc_8", "ap50", "ap", "rpn_objectness"} <= set(record)
    figures = os.listdir(os.path.join(run_dir, "figures"))
    assert "validation_step_000004.png" in figures
    assert "validation_step_000004_froc.png" in figures
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["best_metric"] == "cpm"
    result = medjax(
        "medjax-eval", f"run_dir={run_dir}", data_dir=data_dir, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "eval.json")) as f:
        metrics = json.load(f)["metrics"]
    assert metrics["num_examples"] == 12 and 0.0 <= metrics["cpm"] <= 1.0
