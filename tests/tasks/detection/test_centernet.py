"""CenterNet targets, loss and decoding: a perfect output decodes to the truth
boxes, CenterNet's Gaussian radius, and the loss's parts."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data.datasets.phantoms import torso_schema
from medjax.ops import boxes as box_ops
from medjax.tasks.detection import CenterNetTask
from medjax.tasks.detection.centernet import gaussian_radius
from tests.tasks.detection.test_pixel import _batch

DATA = types.SimpleNamespace(
    schema=torso_schema(), spacing=(6.25, 6.25), name="phantoms"
)


def test_gaussian_radius_is_centernets():
    # CenterNet's utils/image.py for a 4 x 4 box at overlap 0.7: the third case,
    # (-2*.7*8 + sqrt((2*.7*8)^2 + 4*4*.7*.3*16)) / 2.
    expected = (-11.2 + np.sqrt(11.2**2 + 4 * 2.8 * 4.8)) / 2
    assert float(gaussian_radius(4.0, 4.0, 0.7)) == pytest.approx(expected, rel=1e-6)
    assert float(gaussian_radius(4.0, 4.0, 0.7)) == pytest.approx(1.0933, abs=1e-4)


def _perfect_outputs(task, batch):
    shape = batch["image"].shape[1:3]
    target = task.targets(batch, shape)
    heat = jnp.clip(target["heatmap"], 1e-6, 1 - 1e-6)
    size = jnp.zeros(batch["image"].shape[:3] + (2,))
    offset = jnp.zeros_like(size)
    for b in range(size.shape[0]):
        for k in np.flatnonzero(target["valid"][b]):
            i, j = (int(v) for v in target["indices"][b, k])
            size = size.at[b, i, j].set(target["size"][b, k])
            offset = offset.at[b, i, j].set(target["offset"][b, k])
    return {
        "heatmap": jnp.log(heat) - jnp.log1p(-heat),
        "size": size,
        "offset": offset,
    }, target


def test_a_perfect_output_decodes_to_the_truth_boxes():
    task = CenterNetTask(max_detections=6).configure(DATA)
    batch = _batch()
    outputs, target = _perfect_outputs(task, batch)
    # The centres are splatted with value exactly 1, sigma from the box size.
    assert int((target["heatmap"] == 1).sum()) == 3
    boxes, scores, _ = jax.jit(task.candidates)(outputs)
    truth = task.truth(batch)
    for b, count in enumerate([2, 1, 0]):
        np.testing.assert_allclose(scores[b, :count], 1 - 1e-6, rtol=1e-6)
        if count:
            assert float(scores[b, count]) < 1e-5  # the background next
        found = sorted(map(tuple, np.asarray(boxes[b, :count]).round(4)))
        expected = sorted(map(tuple, np.asarray(truth["boxes"][b, :count])))
        np.testing.assert_allclose(found, expected, atol=1e-4)
    host = jax.tree.map(np.asarray, task.host_outputs(outputs, batch))
    result = task.split_metrics(host)
    assert result["cpm"] == 1.0 and result["ap"] == 1.0
    # The perfect output's L1 terms vanish; its focal term (not 0: p = y < 1
    # off the centres still pays (1 - y)^4 y^2 log(1 - y)) is far below the
    # initial prior's.
    _, parts = task.loss(outputs, batch)
    np.testing.assert_allclose(parts["size_loss"], 0, atol=1e-6)
    np.testing.assert_allclose(parts["offset_loss"], 0, atol=1e-6)
    prior = {**outputs, "heatmap": jnp.full_like(outputs["heatmap"], -2.19)}
    _, start = task.loss(prior, batch)
    assert np.all(parts["heatmap_loss"][:2] < 0.01 * start["heatmap_loss"][:2])


def test_targets_round_the_box_centre_and_keep_the_offset():
    task = CenterNetTask().configure(DATA)
    batch = _batch()
    target = task.targets(batch, batch["image"].shape[1:3])
    truth = task.truth(batch)
    centre = 0.5 * (truth["boxes"][..., :2] + truth["boxes"][..., 2:])
    valid = np.asarray(target["valid"])
    np.testing.assert_allclose(
        (target["indices"] + target["offset"])[valid], centre[valid], atol=1e-6
    )
    assert np.all(np.abs(np.asarray(target["offset"])[valid]) <= 0.5)
    np.testing.assert_array_equal(target["size"], box_ops.box_size(truth["boxes"]))


def test_one_lesion_class_only():
    with pytest.raises(ValueError, match="task.num_classes"):
        CenterNetTask(num_classes=3)


def test_a_perfect_3d_output_decodes_to_the_truth_boxes():
    shape = (14, 12, 10)
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    instance = np.zeros((1,) + shape, np.int32)
    centres = np.array([[4.0, 4.0, 3.0], [9.0, 7.0, 6.5]], np.float32)
    for k, (centre, radius) in enumerate(zip(centres, (2.5, 3.0))):
        instance[0][((grid - centre) ** 2).sum(-1) < radius**2] = k + 1
    batch = {
        "image": jnp.zeros((1,) + shape + (1,)),
        "lesion_mask": jnp.asarray(instance),
        "lesion_centers": jnp.asarray(centres[None]),
        "lesion_valid": jnp.ones((1, 2), bool),
        "lesion_radii": jnp.asarray([[2.5, 3.0]]),
    }
    data = types.SimpleNamespace(schema=torso_schema(), spacing=(6.25,) * 3, name="v")
    task = CenterNetTask(max_detections=4).configure(data)
    target = task.targets(batch, shape)
    heat = jnp.clip(target["heatmap"], 1e-6, 1 - 1e-6)
    size = jnp.zeros((1,) + shape + (3,))
    offset = jnp.zeros_like(size)
    for k in range(2):
        index = (0,) + tuple(int(v) for v in target["indices"][0, k])
        size = size.at[index].set(target["size"][0, k])
        offset = offset.at[index].set(target["offset"][0, k])
    outputs = {
        "heatmap": jnp.log(heat) - jnp.log1p(-heat),
        "size": size,
        "offset": offset,
    }
    boxes, scores, _ = task.candidates(outputs)
    truth = task.truth(batch)["boxes"][0]
    found = sorted(map(tuple, np.asarray(boxes[0, :2]).round(4)))
    np.testing.assert_allclose(found, sorted(map(tuple, np.asarray(truth))), atol=1e-4)
    assert float(scores[0, 2]) < 1e-5
