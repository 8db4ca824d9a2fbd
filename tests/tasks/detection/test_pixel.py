"""Pixel-classification detection: one candidate per component, its box the
component's extent; a perfect probability map scores CPM and AP 1 through
split_metrics."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import losses
from medjax.data.datasets.phantoms import torso_schema
from medjax.runtime import random_key
from medjax.tasks.detection import PixelDetectionTask

DATA = types.SimpleNamespace(
    schema=torso_schema(), spacing=(6.25, 6.25), name="phantoms"
)


def _disc(shape, centre, radius):
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    return ((grid - np.asarray(centre)) ** 2).sum(-1) < radius**2


def _batch():
    """Three 40 x 40 scans: two lesions, one lesion, none."""
    shape = (40, 40)
    centres = np.zeros((3, 3, 2), np.float32)
    valid = np.zeros((3, 3), bool)
    radii = np.zeros((3, 3), np.float32)
    instance = np.zeros((3,) + shape, np.int32)
    for i, lesions in enumerate(
        [[((9, 11), 3.5), ((28, 30), 2.5)], [((20, 8), 4.0)], []]
    ):
        for k, (centre, radius) in enumerate(lesions):
            instance[i][_disc(shape, centre, radius)] = k + 1
            centres[i, k], radii[i, k], valid[i, k] = centre, radius, True
    return {
        "image": jnp.zeros((3,) + shape + (1,)),
        "lesion_mask": jnp.asarray(instance),
        "lesion_centers": jnp.asarray(centres),
        "lesion_valid": jnp.asarray(valid),
        "lesion_radii": jnp.asarray(radii),
        "valid": jnp.ones(3, bool),
    }


def _logits(probability):
    z = jnp.log(probability) - jnp.log1p(-probability)
    return jnp.stack([jnp.zeros_like(z), z], -1)


def test_a_perfect_probability_map_gives_cpm_and_ap_one():
    task = PixelDetectionTask(max_detections=8).configure(DATA)
    batch = _batch()
    probability = jnp.where(batch["lesion_mask"] > 0, 0.99, 0.01)
    host = jax.tree.map(
        np.asarray, jax.jit(task.host_outputs)(_logits(probability), batch)
    )
    # One candidate per lesion at 0.99 (its box the lesion's extent), then the
    # flat background's voxels at 0.01 (a plateau: every voxel a local maximum).
    np.testing.assert_allclose(
        host["pred_scores"][0, :3], [0.99, 0.99, 0.01], rtol=1e-6
    )
    np.testing.assert_allclose(host["pred_scores"][2, 0], 0.01, rtol=1e-6)
    found = host["pred_boxes"][0, :2]
    truth = host["true_boxes"][0, :2]
    assert sorted(map(tuple, found)) == sorted(map(tuple, truth))
    result = task.split_metrics(host)
    assert result["cpm"] == 1.0 and result["ap50"] == 1.0 and result["ap"] == 1.0
    assert result["num_lesions"] == 3


def test_one_candidate_per_component_scored_by_its_peak_or_mean():
    probability = np.full((1, 12, 12), 0.05, np.float32)
    probability[0, 2:5, 2:5] = [[0.6, 0.7, 0.6], [0.7, 0.9, 0.7], [0.6, 0.7, 0.6]]
    probability[0, 8, 8] = 0.3  # a weak peak below the threshold
    logits = _logits(jnp.asarray(probability))
    peak = PixelDetectionTask(max_detections=3).configure(DATA).detections(logits)
    np.testing.assert_allclose(peak["scores"][0], [0.9, 0.3, 0.05], rtol=1e-5)
    np.testing.assert_array_equal(peak["points"][0, :2], [[3, 3], [8, 8]])
    np.testing.assert_array_equal(peak["boxes"][0, :2], [[2, 2, 4, 4], [8, 8, 8, 8]])
    mean = PixelDetectionTask(max_detections=2, score="component_mean").configure(DATA)
    scores = mean.detections(logits)["scores"][0]
    np.testing.assert_allclose(
        scores, [probability[0, 2:5, 2:5].mean(), 0.3], rtol=1e-5
    )


def test_loss_is_the_segmentation_loss_of_the_binarised_instance_map():
    task = PixelDetectionTask(loss_function="focal").configure(DATA)
    batch = _batch()
    logits = jax.random.normal(random_key(0), batch["image"].shape[:-1] + (2,))
    loss, per_example = task.loss(logits, batch)
    labels = (batch["lesion_mask"] > 0).astype(jnp.int32)
    expected = losses.softmax_focal_loss(logits, labels, mask=batch["valid"], gamma=2.0)
    np.testing.assert_allclose(per_example["loss"], expected, rtol=1e-6)
    assert float(loss) == pytest.approx(float(expected.mean()), rel=1e-6)


def test_bad_options_fail_with_the_option_named():
    with pytest.raises(ValueError, match="task.score"):
        PixelDetectionTask(score="median")
    with pytest.raises(ValueError, match="task.loss_function"):
        PixelDetectionTask(loss_function="hinge")
