"""The DetectionTask base: the box source chosen by role, truth boxes derived
from an augmented instance map, FROC/CPM and AP through split_metrics on a
hand-worked case, the one-line error for data without lesions, decode and the
figures."""

import dataclasses
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.augment import Augmentation
from medjax.data import schema as roles
from medjax.data.datasets.phantoms import torso_schema
from medjax.ops import boxes as box_ops
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.detection.task import DetectionTask


@dataclasses.dataclass(frozen=True)
class BoxOracle(DetectionTask):
    """Outputs are the candidates themselves: ``{"boxes", "scores", "valid"}``."""

    def candidates(self, outputs):
        return outputs["boxes"], outputs["scores"], outputs["valid"]


def _data(schema, spacing=(6.25, 6.25), name="phantoms"):
    return types.SimpleNamespace(schema=schema, spacing=spacing, name=name)


def _disc(shape, centre, radius):
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    return ((grid - np.asarray(centre)) ** 2).sum(-1) < radius**2


def test_configure_derives_boxes_from_the_instance_map_and_fills_spacing():
    task = BoxOracle().configure(_data(torso_schema()))
    assert task.box_source == "instances" and task.spacing == (6.25, 6.25)
    assert set(task.batch_keys) == {
        "image",
        "lesion_centers",
        "lesion_radii",
        "lesion_mask",
        "lesion_valid",
    }
    assert dict(task.batch_roles())["lesion_centers"] == roles.points("lesion_valid")


def test_configure_takes_a_native_boxes_field_when_there_is_no_instance_map():
    schema = {
        "image": roles.image(),
        "lesion_centers": roles.points("lesion_valid"),
        "lesion_valid": roles.VALID,
        "lesion_radii": roles.REGRESSION_TARGET,
        "nodule_boxes": roles.boxes("box_valid"),
        "box_valid": roles.VALID,
    }
    task = BoxOracle().configure(_data(schema))
    assert (task.box_source, task.boxes_key) == ("boxes", "nodule_boxes")
    assert not task.uses_mask
    boxes = jnp.asarray([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    batch = {
        "nodule_boxes": boxes,
        "box_valid": jnp.asarray([[True, False]]),
        "lesion_centers": jnp.zeros((1, 2, 2)),
        "lesion_valid": jnp.ones((1, 2), bool),
        "lesion_radii": jnp.ones((1, 2)),
    }
    truth = task.truth(batch)
    np.testing.assert_array_equal(truth["boxes"], boxes)
    np.testing.assert_array_equal(truth["valid"], [[True, False]])


def test_data_without_lesions_fails_in_one_line_naming_task_and_data():
    schema = {"image": roles.image(), "organ_mask": roles.label_map()}
    with pytest.raises(TaskDataMismatch) as error:
        BoxOracle().configure(
            _data(schema, name="organs"),
            task_name="centernet",
            data_name="phantoms2d_seg",
        )
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "task=centernet needs lesions: an instance_map field 'lesion_mask'"
    )
    assert "data=phantoms2d_seg has image 'image', label_map 'organ_mask'" in message


def test_truth_boxes_of_an_augmented_instance_map_stay_on_their_lesions():
    shape = (40, 40)
    centres = np.array([[12.0, 14.0], [27.0, 25.0], [0.0, 0.0]], np.float32)
    instance = np.zeros(shape, np.int32)
    instance[_disc(shape, centres[0], 4)] = 1
    instance[_disc(shape, centres[1], 3)] = 2
    batch = {
        "image": jnp.asarray(instance[None, ..., None], jnp.float32),
        "lesion_mask": jnp.asarray(instance[None]),
        "lesion_centers": jnp.asarray(centres[None]),
        "lesion_valid": jnp.asarray([[True, True, False]]),
        "lesion_radii": jnp.asarray([[4.0, 3.0, 0.0]]),
    }
    task = BoxOracle().configure(_data(torso_schema()))
    augment = Augmentation(
        rotation_probability=1.0,
        rotation_degrees=40.0,
        translation_probability=1.0,
        translation_fraction=0.1,
    )
    moved = augment(random_key(3), batch, task.batch_roles())
    assert not np.array_equal(moved["lesion_mask"], batch["lesion_mask"])
    truth = jax.jit(task.truth)(moved)
    np.testing.assert_array_equal(truth["valid"], [[True, True, False]])
    mask = np.asarray(moved["lesion_mask"][0])
    for k in range(2):
        rows, cols = np.nonzero(mask == k + 1)
        # Exactly the extent of the moved lesion (tight, unlike moved corners)...
        np.testing.assert_array_equal(
            truth["boxes"][0, k], [rows.min(), cols.min(), rows.max(), cols.max()]
        )
        # ... and the moved centre inside it.
        low, high = truth["boxes"][0, k, :2], truth["boxes"][0, k, 2:]
        centre = np.asarray(moved["lesion_centers"][0, k])
        assert np.all(centre >= low - 0.5) and np.all(centre <= high + 0.5)
    # A box moved through its corners would be larger after a 40-degree turn.
    original = box_ops.boxes_from_instances(jnp.asarray(instance), 3)[0]
    assert box_ops.box_volume(truth["boxes"][0, 0]) < 1.4 * box_ops.box_volume(
        original[0]
    )


def _hand_case(task):
    """Two 48 x 48 scans. Scan 0: lesions at (10, 10) and (40, 40) (radius 3),
    candidates 0.9 on the first, 0.8 a false positive, 0.6 on the second;
    scan 1: no lesion, a false positive at 0.7."""
    shape = (48, 48)
    instance = np.zeros((2,) + shape, np.int32)
    instance[0][_disc(shape, (10, 10), 3)] = 1
    instance[0][_disc(shape, (40, 40), 3)] = 2
    truth = np.asarray(box_ops.boxes_from_instances(jnp.asarray(instance[0]), 2)[0])
    k = task.max_detections
    boxes = np.zeros((2, k, 4), np.float32)
    scores = np.zeros((2, k), np.float32)
    valid = np.zeros((2, k), bool)
    boxes[0, :3] = [truth[0], [29, 29, 31, 31], truth[1]]
    scores[0, :3] = [0.9, 0.8, 0.6]
    boxes[1, 0], scores[1, 0] = [5, 5, 7, 7], 0.7
    valid[0, :3] = valid[1, :1] = True
    batch = {
        "image": jnp.zeros((2,) + shape + (1,)),
        "lesion_mask": jnp.asarray(instance),
        "lesion_centers": jnp.asarray(
            [[[10, 10], [40, 40]], [[0, 0], [0, 0]]], jnp.float32
        ),
        "lesion_valid": jnp.asarray([[True, True], [False, False]]),
        "lesion_radii": jnp.asarray([[3.0, 3.0], [0.0, 0.0]]),
    }
    outputs = {
        "boxes": jnp.asarray(boxes),
        "scores": jnp.asarray(scores),
        "valid": jnp.asarray(valid),
    }
    return outputs, batch


def test_split_metrics_on_a_hand_worked_case():
    task = BoxOracle(max_detections=5).configure(
        _data(torso_schema(), spacing=(2.0, 2.0))
    )
    outputs, batch = _hand_case(task)
    host = jax.tree.map(np.asarray, jax.jit(task.host_outputs)(outputs, batch))
    result = task.split_metrics(host)
    # FROC points (fps, sensitivity): (0, .5) (.5, .5) (1, .5) (1, 1): 1/8..1/2
    # read 0.5, 1..8 read 1.
    np.testing.assert_allclose(
        [
            result[n]
            for n in (
                "froc_1_8",
                "froc_1_4",
                "froc_1_2",
                "froc_1",
                "froc_2",
                "froc_4",
                "froc_8",
            )
        ],
        [0.5, 0.5, 0.5, 1, 1, 1, 1],
    )
    assert result["cpm"] == pytest.approx(5.5 / 7)
    # COCO AP: TP, FP, FP, TP over 2 truths: precision 1 up to recall 0.5 (51 of
    # the 101 points), then 0.5.
    assert result["ap50"] == pytest.approx((51 + 50 * 0.5) / 101)
    assert result["ap"] == pytest.approx(result["ap50"])  # the hits are exact boxes
    assert result["num_lesions"] == 2
    # At 1 FP/scan (threshold 0.6) both radius-3 lesions are found.
    assert result["sensitivity_r3_4"] == 1.0 and np.isnan(result["sensitivity_r0_2"])
    # Box centres of the disc boxes are the disc centres: 0 mm off.
    assert result["localisation_error"] == pytest.approx(0.0)


def test_perfect_candidates_give_cpm_and_ap_one():
    task = BoxOracle(max_detections=5).configure(_data(torso_schema()))
    outputs, batch = _hand_case(task)
    outputs["valid"] = (
        outputs["valid"] & (outputs["scores"] != 0.8) & (outputs["scores"] != 0.7)
    )
    host = jax.tree.map(np.asarray, task.host_outputs(outputs, batch))
    result = task.split_metrics(host)
    assert result["cpm"] == 1.0 and result["ap50"] == 1.0 and result["ap"] == 1.0


def test_decode_returns_one_example_and_draw_cases_writes_both_figures(tmp_path):
    task = BoxOracle(max_detections=5).configure(_data(torso_schema()))
    outputs, batch = _hand_case(task)
    assert task.prediction_role() == roles.POINTS
    one = jax.tree.map(lambda a: a[:1], outputs)
    decoded = jax.jit(task.decode)(one)
    assert {k: v.shape for k, v in decoded.items()} == {
        "points": (5, 2),
        "scores": (5,),
        "valid": (5,),
        "boxes": (5, 4),
    }
    np.testing.assert_allclose(decoded["points"][0], [10, 10])
    np.testing.assert_array_equal(decoded["valid"], [True, True, True, False, False])
    host = jax.tree.map(np.asarray, task.host_outputs(outputs, batch))
    path = str(tmp_path / "figures" / "validation_step_000010.png")
    task.draw_cases(host, path, title="validation")
    assert os.path.getsize(path) > 1000
    assert (
        os.path.getsize(str(tmp_path / "figures" / "validation_step_000010_froc.png"))
        > 1000
    )
