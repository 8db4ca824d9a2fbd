"""The sequence tasks: EF regression losses and split metrics on hand-computed
values, the roles they check (a time axis, or none for slice stacks), slice
stacks moved to the time axis, and a tiny run of each on 4 forced devices."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics

from medjax.data import schema as roles
from medjax.data.datasets.phantoms import cine_schema, torso_schema
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.classification import ClassificationTask
from medjax.tasks.sequence import SequenceClassificationTask, SequenceRegressionTask


def data_with(schema, name="cine"):
    return type("Data", (), {"schema": schema, "name": name})()


class FrameMean(nn.Module):
    """A stand-in sequence model for these tests: one conv per frame (frames
    folded into the batch), global average, mean over time, dense."""

    num_outputs: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        batch, frames = x.shape[:2]
        h = nn.relu(nn.Conv(4, (3, 3))(x.reshape(batch * frames, *x.shape[2:])))
        h = h.mean((1, 2)).reshape(batch, frames, -1).mean(1)
        return nn.Dense(self.num_outputs)(h)


def test_regression_loss_and_mae_in_standardised_and_target_units():
    task = SequenceRegressionTask(target_center=0.5, target_scale=0.1)
    batch = {"ejection_fraction": jnp.array([0.6, 0.3, 0.9]),
             "valid": jnp.array([True, True, False])}
    outputs = jnp.array([[2.0], [-2.0], [7.0]])  # predicts 0.7, 0.3, (1.2: padding)
    loss, per_example = task.loss(outputs, batch)
    # standardised targets 1, -2: squared errors 1 and 0, the padding left out.
    assert float(loss) == pytest.approx(0.5)
    np.testing.assert_allclose(per_example["loss"], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(per_example["mae"], [0.1, 0.0, 0.0], atol=1e-6)
    huber = SequenceRegressionTask(target_center=0.5, target_scale=0.1,
                                   loss_function="huber", huber_delta=1.0)
    loss, per_example = huber.loss(jnp.array([3.0, -2.0, 0.0]), batch)
    # |error| 2 > delta: delta * (|e| - delta / 2) = 1.5; 0 for the second.
    np.testing.assert_allclose(per_example["loss"], [1.5, 0.0, 0.0], atol=1e-6)
    assert float(loss) == pytest.approx(0.75)
    out = task.host_outputs(outputs, batch)
    np.testing.assert_allclose(out["prediction"], [0.7, 0.3, 1.2], atol=1e-6)
    with pytest.raises(ValueError, match="model.num_outputs=1"):
        task.loss(jnp.zeros((3, 2)), batch)
    with pytest.raises(ValueError, match="task.loss_function"):
        SequenceRegressionTask(loss_function="l1")


def test_regression_split_metrics_match_scikit_learn_in_fractions_and_points():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.25, 0.7, 30)
    predicted = target + rng.normal(0, 0.03, 30)
    result = SequenceRegressionTask().split_metrics(
        {"prediction": predicted, "target": target})
    mae = sklearn.metrics.mean_absolute_error(target, predicted)
    rmse = np.sqrt(sklearn.metrics.mean_squared_error(target, predicted))
    assert result["mae"] == pytest.approx(mae)
    assert result["rmse"] == pytest.approx(rmse)
    assert result["r2"] == pytest.approx(sklearn.metrics.r2_score(target, predicted), rel=1e-5)
    assert result["mae_pp"] == pytest.approx(100 * mae)
    assert result["rmse_pp"] == pytest.approx(100 * rmse)
    # Predicting the mean everywhere: R^2 = 0.
    mean = SequenceRegressionTask(percent_metrics=False).split_metrics(
        {"prediction": np.full(30, target.mean()), "target": target})
    assert mean["r2"] == pytest.approx(0.0, abs=1e-6) and "mae_pp" not in mean


def test_the_scatter_figure_is_drawn_beside_the_figure_path(tmp_path):
    task = SequenceRegressionTask()
    host = {"target": np.array([0.3, 0.5, 0.6]), "prediction": np.array([0.35, np.nan, 0.6])}
    task.draw_cases(host, str(tmp_path / "validation_step_000002.png"), "validation")
    assert os.path.getsize(tmp_path / "validation_step_000002_scatter.png") > 1000


def test_configure_reads_the_cine_schema_and_refuses_other_data_in_one_line():
    cine = data_with(cine_schema())
    regression = SequenceRegressionTask().configure(cine)
    assert regression.batch_keys == ("image", "ejection_fraction")
    assert dict(regression.field_roles())["image"] == roles.image(time=True)
    motion = SequenceClassificationTask(num_classes=2).configure(cine)
    assert motion.batch_keys == ("image", "label")
    torso = data_with(torso_schema(), "medjax_phantoms/torso2d_64")
    with pytest.raises(TaskDataMismatch, match=(
            r"^task=sequence_regression needs a target field 'ejection_fraction'; "
            r"data=medjax_phantoms/torso2d_64 has no field 'ejection_fraction' "
            r"\(its fields: image 'image', .*\)$")):
        SequenceRegressionTask().configure(torso, task_name="sequence_regression")
    # The label is there, but the image is one slice: no time axis.
    with pytest.raises(TaskDataMismatch, match=(
            r"^task=sequence_classification needs an image field 'image' with a time "
            r"axis \(cine frames; a 3D volume needs task.slice_axis\); "
            r"data=medjax_phantoms/torso2d_64 has image 'image' \(its fields: .*\)$")):
        SequenceClassificationTask().configure(torso, task_name="sequence_classification")
    # Slice stacks read a volume, not a cine.
    with pytest.raises(TaskDataMismatch, match="without a time axis"):
        SequenceClassificationTask(slice_axis=2).configure(cine)
    assert "\n" not in str(pytest.raises(TaskDataMismatch, SequenceRegressionTask().configure,
                                         data_with(torso_schema())).value)


def test_a_slice_stack_moves_a_spatial_axis_to_time_and_augments_as_a_sequence():
    task = SequenceClassificationTask(slice_axis=2).configure(
        data_with(torso_schema(), "torso3d"))
    volume = jnp.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5, 1).astype(jnp.float32)
    batch = {"image": volume, "label": jnp.array([0, 1]), "valid": jnp.ones(2, bool)}
    stack = task.prepare_batch(random_key(0), batch, train=True)["image"]
    assert stack.shape == (2, 5, 3, 4, 1)
    for z in range(5):  # slice z of the sequence is the volume's axial slice z
        np.testing.assert_array_equal(stack[:, z], volume[:, :, :, z])
    assert dict(task.batch_roles())["image"] == roles.image(time=True)
    assert dict(task.batch_roles())["label"] == roles.CLASS
    # The classification task's loss and metrics, unchanged.
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    assert float(task.loss(logits, batch)[0]) == pytest.approx(
        float(ClassificationTask().loss(logits, batch)[0]))
    cine = SequenceClassificationTask()
    assert cine.prepare_batch(None, batch, train=True) is batch
    with pytest.raises(ValueError, match="task.slice_axis: expected null or a spatial axis"):
        SequenceClassificationTask(slice_axis=3)
    with pytest.raises(ValueError, match=r"expected a 3D image \[B, \*S, C\]"):
        task.prepare_batch(None, {"image": volume[..., 0, :]}, train=False)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_each_task_trains_end_to_end_on_four_devices(kind, tiny_cine, tmp_path):
    from medjax.augment import Augmentation
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer

    assert jax.device_count() == 4
    if kind == "regression":
        task = SequenceRegressionTask(target_center=0.5, target_scale=0.15)
        model, names = FrameMean(1), {"mae", "mae_pp", "rmse", "rmse_pp", "r2"}
    else:
        task = SequenceClassificationTask(num_classes=2)
        model, names = FrameMean(2), {"auroc", "accuracy", "sensitivity"}
    augment = Augmentation(phase_shift_probability=0.5, rotation_probability=0.5,
                           rotation_degrees=10.0)
    summary = train(
        task=task, model=model, tx=make_optimizer("adam", lr=1e-3, total_steps=2),
        data=tiny_cine, augment=augment, run_dir=str(tmp_path / "run"), max_steps=2,
        eval_every=2, checkpoint_every=2, best_metric=task.primary_metric, log_every=1,
        progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 4 and names <= set(validation)
    assert all(np.isfinite(validation[name]) for name in names - {"auroc"})
    figures = os.listdir(tmp_path / "run" / "figures")
    suffix = "_scatter.png" if kind == "regression" else "_roc.png"
    assert f"validation_step_000002{suffix}" in figures
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 2]


def test_a_slice_stack_task_trains_end_to_end_on_four_devices(tmp_path):
    """Is there a lesion in the volume: 16^3 torso phantoms read as 16 axial
    slices (the stand-in model: frames are slices)."""
    from medjax.data.datasets.phantoms import phantoms
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer

    assert jax.device_count() == 4
    volumes = phantoms(
        kind="torso3d", image_size=16,
        split_sizes={"train": 4, "validation": 4, "test": 4},
        data_dir=str(tmp_path / "data"), batch_size=4, eval_batch_size=4,
    )
    task = SequenceClassificationTask(num_classes=2, slice_axis=2)
    summary = train(
        task=task, model=FrameMean(2),
        tx=make_optimizer("adam", lr=1e-3, total_steps=2), data=volumes,
        augment=None, run_dir=str(tmp_path / "run"),
        max_steps=2, eval_every=2, checkpoint_every=2, best_metric="loss",
        best_mode="min", log_every=1, progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 4
    assert np.isfinite(validation["loss"]) and 0 <= validation["accuracy"] <= 1
    assert "validation_step_000002_roc.png" in os.listdir(tmp_path / "run" / "figures")
