import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import losses
from medjax.data import schema as roles
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.segmentation.task import SegmentationTask


def _batch(labels, image=None):
    labels = jnp.asarray(labels, jnp.int32)
    if image is None:
        image = labels[..., None].astype(jnp.float32)
    return {"image": image, "mask": labels, "valid": jnp.ones(len(labels), bool)}


def test_loss_is_the_configured_per_example_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(2, 5, 7))
    logits = jnp.asarray(rng.normal(size=(2, 5, 7, 3)), jnp.float32)
    batch = _batch(labels)
    batch["valid"] = jnp.array([True, False])
    task = SegmentationTask(num_classes=3, loss_function="focal", gamma=1.5, class_weights=(0.2, 1, 2))
    loss, per_example = task.loss(logits, batch)
    expected = losses.softmax_focal_loss(
        logits, jnp.asarray(labels), gamma=1.5, class_weights=jnp.array([0.2, 1.0, 2.0]),
        mask=batch["valid"],
    )
    np.testing.assert_allclose(per_example["loss"], expected, rtol=1e-6)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-6)  # the padded one is out
    assert float(per_example["loss"][1]) == 0.0


def test_deep_supervision_weights_halve_per_level_against_strided_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(1, 8, 6))
    full = jnp.asarray(rng.normal(size=(1, 8, 6, 2)), jnp.float32)
    half = jnp.asarray(rng.normal(size=(1, 4, 3, 2)), jnp.float32)
    quarter = jnp.asarray(rng.normal(size=(1, 2, 2, 2)), jnp.float32)
    task = SegmentationTask(num_classes=2, loss_function="dice_ce")
    loss, _ = task.loss((full, half, quarter), _batch(labels))
    one = lambda logits, lab: losses.dice_ce_loss(logits, jnp.asarray(lab))[0]  # noqa: E731
    expected = (
        4 * one(full, labels) + 2 * one(half, labels[:, ::2, ::2])
        + one(quarter, labels[:, ::4, ::3])  # ceil(8/2)=4 -> stride 4; ceil(6/2)=3 -> 3
    ) / 7
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_training_batches_crop_every_dense_field_at_one_place():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=(6, 20, 17))
    task = SegmentationTask(num_classes=4, patch_size=(8, 5), foreground_fraction=0.5)
    batch = _batch(labels)
    # an instance map and a displacement field ride along: both are dense fields
    batch["instances"] = jnp.asarray(labels * 10, jnp.int32)
    batch["flow"] = jnp.stack([batch["image"][..., 0], -batch["image"][..., 0]], -1)
    batch["label"] = jnp.arange(6)  # not on the grid: left as it is
    task = dataclasses.replace(task, schema=roles.as_schema({
        "image": roles.image(), "mask": roles.label_map(),
        "instances": roles.instance_map(), "flow": roles.VECTOR, "label": roles.CLASS,
    }))
    out = task.prepare_batch(random_key(0), batch, train=True)
    assert out["image"].shape == (6, 8, 5, 1) and out["mask"].shape == (6, 8, 5)
    np.testing.assert_array_equal(out["image"][..., 0], out["mask"].astype(np.float32))
    np.testing.assert_array_equal(out["instances"], out["mask"] * 10)
    np.testing.assert_array_equal(out["flow"][..., 1], -out["mask"].astype(np.float32))
    np.testing.assert_array_equal(out["label"], np.arange(6))
    # evaluation, or no patch size: whole images
    whole = task.prepare_batch(random_key(0), batch, train=False)
    assert whole["mask"].shape == (6, 20, 17) and whole["flow"].shape == (6, 20, 17, 2)
    whole_task = SegmentationTask(num_classes=4)
    unpatched = whole_task.prepare_batch(None, _batch(labels), train=True)
    assert unpatched["mask"].shape == (6, 20, 17)


class _Data:
    """The parts of a Dataset that configure reads."""

    def __init__(self, schema, spacing=None, name="toy"):
        self.schema, self.spacing, self.name = schema, spacing, name


def test_configure_checks_roles_and_fills_spacing_from_the_data():
    data = _Data({"image": roles.image(), "organ_mask": roles.label_map(),
                  "label": roles.CLASS}, spacing=(2.0, 3.0))
    task = SegmentationTask(mask_key="organ_mask").configure(data)
    assert task.spacing == (2.0, 3.0)
    assert task.batch_keys == ("image", "organ_mask")
    assert dict(task.batch_roles()) == {
        "image": roles.image(), "organ_mask": roles.label_map()
    }
    # a spacing set in the config wins over the data's
    own = SegmentationTask(mask_key="organ_mask", spacing=(1, 1)).configure(data)
    assert own.spacing == (1, 1)
    # instance ids serve a label_map need (binary lesion segmentation)
    lesions = _Data({"image": roles.image(), "lesion_mask": roles.instance_map()})
    binary = SegmentationTask(mask_key="lesion_mask", binary=True).configure(lesions)
    assert binary.spacing is None
    tabular = _Data({"features": roles.TABULAR, "label": roles.CLASS},
                    name="breast_cancer")
    with pytest.raises(TaskDataMismatch) as error:
        SegmentationTask().configure(tabular, task_name="segmentation")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "task=segmentation needs an image field 'image'; data=breast_cancer has no "
        "field 'image'"
    )


def test_predictions_are_label_maps_decoded_by_argmax():
    task = SegmentationTask(num_classes=3)
    assert task.prediction_role() == "label_map"
    logits = jnp.asarray([[[0.0, 2.0, 1.0], [3.0, -1.0, 0.0]]])  # [1, 2, 3]
    labels = task.decode(logits)
    assert labels.dtype == jnp.uint8
    np.testing.assert_array_equal(labels, [[1, 0]])


def test_predict_uses_sliding_windows_only_when_the_patch_is_smaller():
    images = jnp.asarray(np.random.default_rng(3).normal(size=(2, 13, 11, 1)), jnp.float32)
    apply = lambda x: jnp.concatenate([x, -x * x], axis=-1)  # noqa: E731 (pointwise)
    whole = apply(images)
    for patch in (None, (13, 11), (6, 5)):
        task = SegmentationTask(num_classes=2, patch_size=patch, window_overlap=0.5)
        np.testing.assert_allclose(jax.jit(lambda x: task.predict(apply, x))(images), whole, atol=1e-5)


def test_binary_task_maps_instance_ids_to_lesion():
    task = SegmentationTask(num_classes=2, binary=True, mask_key="lesion_mask")
    labels = task.labels({"lesion_mask": jnp.array([[0, 1, 2, 3]])})
    np.testing.assert_array_equal(labels, [[0, 1, 1, 1]])


def test_split_metrics_follow_the_empty_truth_convention():
    task = SegmentationTask(num_classes=3, class_names=("background", "a", "b"), spacing=(2.0, 2.0))
    truth = np.zeros((2, 6, 6), np.uint8)
    prediction = np.zeros((2, 6, 6), np.uint8)
    truth[0, 1:3, 1:3] = 1          # case 0: class a, 4 voxels
    prediction[0, 1:3, 1:2] = 1     # predicted 2 of them: Dice 2*2/(4+2) = 2/3
    truth[1, 2:4, 2:4] = 2          # case 1: class b only, missed entirely
    prediction[1, 0, 0] = 1         # and a false positive of a (truth of a empty)
    host = {
        "prediction": prediction, "truth": truth,
        "dice": jax.device_get(task.host_outputs(
            jax.nn.one_hot(prediction, 3) * 10, _batch(truth)
        )["dice"]),
    }
    host["iou"] = host["dice"]  # not under test here
    result = task.split_metrics(host)
    # a: only case 0 has it in the truth (case 1's false positive is not averaged)
    assert result["dice_a"] == pytest.approx(2 / 3)
    assert result["dice_b"] == pytest.approx(0.0)
    assert result["dice"] == pytest.approx(1 / 3)
    assert result["missed_b"] == 1.0 and result["missed_a"] == 0.0
    # a: predicted column 1 vs truth columns 1-2: farthest truth surface voxel is
    # one column (2 mm) away; the prediction's voxels all lie on the truth.
    assert result["hd95_a"] == pytest.approx(2.0)
    assert np.isnan(result["hd95_b"])  # missed: no surface distance, counted above


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="task.loss_function"):
        SegmentationTask(loss_function="dicey")
    with pytest.raises(ValueError, match="task.class_names"):
        SegmentationTask(num_classes=3, class_names=("a", "b"))
    with pytest.raises(ValueError, match="task.num_classes"):
        SegmentationTask(num_classes=3, binary=True)
    assert dataclasses.replace(SegmentationTask(), spacing=[1, 2]).spacing == (1, 2)


def test_3d_patch_training_and_sliding_window_evaluation_end_to_end(tmp_path):
    """A 3D U-Net trained on foreground-oversampled 8^3 patches of 16^3 phantom
    volumes, evaluated on whole volumes through sliding windows."""
    import json

    from medjax.data.datasets.phantoms import phantoms
    from medjax.data.datasets.phantoms.torso import ORGAN_LABELS
    from medjax.models.unet import unet_tiny
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer

    data = phantoms(
        kind="torso3d", image_size=16, split_sizes={"train": 8, "validation": 2, "test": 2},
        data_dir=str(tmp_path / "data"), batch_size=4, eval_batch_size=4,
    )
    assert data.spacing == (25.0, 25.0, 17.5)
    task = SegmentationTask(
        num_classes=8, class_names=tuple(ORGAN_LABELS), mask_key="organ_mask",
        patch_size=(8, 8, 8), window_batch_size=4,  # spacing: the data's (configure)
    )
    summary = train(
        task=task, model=unet_tiny(num_classes=8, spatial_dims=3),
        tx=make_optimizer("adam", lr=1e-3, total_steps=3), data=data,
        run_dir=str(tmp_path / "run"), max_steps=3, eval_every=3, checkpoint_every=3,
        best_metric="dice", log_every=1, progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 2
    assert 0.0 <= validation["dice"] <= 1.0 and "hd95_liver" in validation
    assert os.path.isfile(tmp_path / "run" / "figures" / "validation_step_000003.png")
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 3]


def test_decathlon_folder_trains_end_to_end(tmp_path):
    from medjax.data.datasets.decathlon import decathlon
    from medjax.models.unet import unet_tiny
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer
    from tests.data.datasets.decathlon_folder import make_decathlon

    make_decathlon(tmp_path / "Task09_Tiny", count=5)  # 20 x 18 x 9 at 2 mm, labels 0..2
    data = decathlon(
        str(tmp_path / "Task09_Tiny"), shape=(8, 8, 4), target_spacing=4.0,
        batch_size=4, eval_batch_size=4,
    )
    assert data.spacing == (4.0, 4.0, 4.0)
    assert len(data.source("train")) == 4 and len(data.source("validation")) == 1
    task = SegmentationTask(num_classes=3, mask_key="mask").configure(data)
    assert task.spacing == data.spacing
    summary = train(
        task=task, model=unet_tiny(num_classes=3, spatial_dims=3),
        tx=make_optimizer("adam", lr=1e-3, total_steps=2), data=data,
        run_dir=str(tmp_path / "run"), max_steps=2, eval_every=2, checkpoint_every=2,
        best_metric="dice", progress=False,
    )
    assert summary["final"]["validation"]["num_examples"] == 1
    assert 0.0 <= summary["final"]["validation"]["dice"] <= 1.0
