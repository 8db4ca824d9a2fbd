"""Landmark tasks: targets and decoding through each method's own path, masks
of absent landmarks, configuration from the data, and bad combinations."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data.datasets.phantoms import cine_schema, torso_schema
from medjax.errors import ConfigError
from medjax.ops import heatmaps
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.landmarks import (
    DirectLandmarkTask,
    HeatmapLandmarkTask,
    PlaneLandmarkTask,
)
from medjax.tasks.landmarks.planes import decode_axis, slice_targets


def fake_data(spacing, shape, schema=None):
    """What ``configure`` reads of a dataset, without building one."""
    example = {"image": np.zeros((*shape, 1), np.float32)}
    return types.SimpleNamespace(
        schema=schema or torso_schema(),
        spacing=spacing,
        name="fake",
        train_split="train",
        source=lambda split: [example],
        convert=lambda e: e,
    )


POINTS_2D = np.array([[10.3, 20.71], [31.6, 5.25], [3.0, 3.0]], np.float32)
VALID = np.array([True, True, False])


def batch_of(points, valid, shape):
    points, valid = jnp.asarray(points)[None], jnp.asarray(valid)[None]
    return {
        "image": jnp.zeros((1, *shape, 1)),
        "landmarks": points,
        "landmarks_valid": valid,
        "valid": jnp.ones(1, bool),
    }


def heatmap_task(**options):
    task = HeatmapLandmarkTask(num_landmarks=3, num_classes=3, **options)
    return task.configure(fake_data((1.5, 0.75), (40, 36)))


def test_configure_fills_spacing_dims_and_the_validity_key():
    task = heatmap_task()
    assert task.spacing == (1.5, 0.75) and task.spatial_dims == 2
    assert task.valid_key == "landmarks_valid"
    assert set(task.batch_keys) == {"image", "landmarks", "landmarks_valid"}
    assert task.primary_metric == "mre" and task.primary_mode == "min"


@pytest.mark.parametrize("peak", [1.0, 0.7])
def test_heatmap_decoding_recovers_sub_voxel_gaussians(peak):
    task = heatmap_task()
    maps = peak * heatmaps.gaussian_heatmaps(POINTS_2D[:2], (40, 36), 2.5)
    points, scores = task.locate(maps[None])
    np.testing.assert_allclose(points[0], POINTS_2D[:2], atol=0.05)
    np.testing.assert_allclose(scores[0], peak, atol=0.05)
    # on a narrow Gaussian the log-domain fit stays exact; the fit to the values
    # is biased toward the voxel centre
    narrow = peak * heatmaps.gaussian_heatmaps(POINTS_2D[:2], (40, 36), 1.0)
    exact, _ = task.locate(narrow[None])
    linear, _ = heatmap_task(decoding="argmax_linear").locate(narrow[None])
    assert np.abs(exact[0] - POINTS_2D[:2]).max() < 1e-3
    assert np.abs(linear[0] - POINTS_2D[:2]).max() > 0.02


def test_heatmap_targets_decode_to_their_points_in_3d():
    task = HeatmapLandmarkTask(num_landmarks=2, num_classes=2).configure(
        fake_data((1.0, 1.0, 2.0), (20, 18, 12))
    )
    points = np.array([[5.37, 11.8, 6.45], [14.02, 3.5, 2.91]], np.float32)
    batch = batch_of(points, [True, True], (20, 18, 12))
    target = task.targets(batch, (20, 18, 12))
    assert target.shape == (1, 20, 18, 12, 2)
    located, _ = task.locate(target)
    np.testing.assert_allclose(located[0], points, atol=0.05)


def test_soft_argmax_decoding_is_close_but_pulled():
    task = heatmap_task(decoding="soft_argmax", soft_argmax_beta=50.0)
    maps = heatmaps.gaussian_heatmaps(POINTS_2D[:2], (40, 36), 2.5)
    points, _ = task.locate(maps[None])
    np.testing.assert_allclose(points[0], POINTS_2D[:2], atol=0.2)


def test_heatmap_loss_zero_on_its_targets_and_absent_maps_by_option():
    shape = (40, 36)
    batch = batch_of(POINTS_2D, VALID, shape)
    zero = heatmap_task()
    target = zero.targets(batch, shape)
    assert float(target[..., 2].max()) == 0.0  # an absent landmark: all zeros
    loss, per_example = zero.loss(target, batch)
    assert float(loss) == 0.0 and per_example["loss"].shape == (1,)
    # a peak where the truth says absent costs with "zero", not with "masked"
    spurious = target.at[0, 5, 5, 2].set(1.0)
    assert float(zero.loss(spurious, batch)[0]) == pytest.approx(1 / (3 * 40 * 36))
    masked = heatmap_task(absent_target="masked")
    assert float(masked.loss(spurious, batch)[0]) == 0.0


def test_heatmap_output_count_must_match_the_landmarks():
    with pytest.raises(
        ConfigError, match=r"num_classes=4 must equal task.num_landmarks=3"
    ):
        HeatmapLandmarkTask(num_landmarks=3, num_classes=4).configure(
            fake_data((1.0, 1.0), (8, 8))
        )


def direct_task(dims=2, shape=(40, 36)):
    task = DirectLandmarkTask(num_landmarks=3, num_classes=3 * (dims + 1))
    return task.configure(fake_data((1.0,) * dims, shape))


def encode(points, presence_logits, shape):
    scale = np.array(shape, np.float32) - 1
    return np.concatenate([(2 * points / scale - 1).ravel(), presence_logits])[None]


def test_direct_regression_decodes_normalised_coordinates_and_masks_absent():
    task = direct_task()
    assert task.image_shape == (40, 36)
    outputs = encode(POINTS_2D, np.array([30.0, 30.0, -30.0]), (40, 36))
    points, scores = task.locate(jnp.asarray(outputs))
    np.testing.assert_allclose(points[0], POINTS_2D, atol=1e-5)
    np.testing.assert_allclose(scores[0], [1, 1, 0], atol=1e-6)
    batch = batch_of(POINTS_2D, VALID, (40, 36))
    loss, _ = task.loss(jnp.asarray(outputs), batch)
    assert float(loss) < 1e-6
    moved = POINTS_2D.copy()
    moved[2] = [30.0, 30.0]  # the absent landmark's coordinates do not matter
    assert (
        float(
            task.loss(jnp.asarray(encode(moved, outputs[0, -3:], (40, 36))), batch)[0]
        )
        < 1e-6
    )
    # one present landmark off by 0.1 normalised units on one axis: L1 0.05 / 2 landmarks
    off = outputs.copy()
    off[0, 0] += 0.1
    assert float(task.loss(jnp.asarray(off), batch)[0]) == pytest.approx(
        0.1 / 2 / 2, rel=1e-4
    )


def test_direct_regression_names_the_output_count_3d_needs():
    with pytest.raises(
        ConfigError, match=r"need 3 x \(3 \+ 1\) = 12 outputs.*task.num_classes=12"
    ):
        DirectLandmarkTask(num_landmarks=3, num_classes=9).configure(
            fake_data((1.0, 1.0, 1.0), (8, 8, 8))
        )


def test_plane_targets_sum_to_one_and_centre_on_the_coordinate():
    target = slice_targets(jnp.asarray([7.3, 12.0]), 24, 1.5)
    np.testing.assert_allclose(target.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(target @ jnp.arange(24.0), [7.3, 12.0], atol=1e-3)
    hard = slice_targets(jnp.asarray([7.6]), 24, 0.0)
    assert int(jnp.argmax(hard[0])) == 8 and float(hard.sum()) == 1.0


def test_plane_decoding_recovers_a_known_point_from_slice_logits():
    shape, point = (20, 16, 12), np.array([6.3, 9.72, 4.45], np.float32)
    logits = []
    for axis, size in enumerate(shape):
        index = np.arange(size, dtype=np.float32)[:, None]
        # one landmark: a parabola over the slices peaking at the coordinate
        logits.append(
            jnp.asarray(-0.5 * ((index - point[axis]) / 1.3) ** 2)[None] * 4.0
        )
    task = PlaneLandmarkTask(num_landmarks=1).configure(
        fake_data((1.0, 1.0, 2.0), shape)
    )
    points, scores = task.locate((*logits, jnp.asarray([[2.0]])))
    np.testing.assert_allclose(points[0, 0], point, atol=1e-3)
    assert float(scores[0, 0]) == pytest.approx(float(jax.nn.sigmoid(2.0)))
    np.testing.assert_allclose(decode_axis(logits[0])[0], [6.3], atol=1e-3)


def test_plane_loss_is_lowest_at_its_targets_and_ignores_absent_landmarks():
    shape = (10, 8, 6)
    task = PlaneLandmarkTask(num_landmarks=2, target_sigma=1.0, presence_weight=0.0)
    task = task.configure(fake_data((1.0, 1.0, 1.0), shape))
    points = np.array([[4.2, 3.0, 2.5], [1.0, 1.0, 1.0]], np.float32)
    batch = batch_of(points, [True, False], shape)
    exact = tuple(
        jnp.log(slice_targets(jnp.asarray(points[:, a]), s, 1.0)).T[None]
        for a, s in enumerate(shape)
    )
    best = float(task.loss((*exact, jnp.zeros((1, 2))), batch)[0])
    worse = float(task.loss((exact[0] * 0.5, *exact[1:], jnp.zeros((1, 2))), batch)[0])
    assert worse > best
    # the absent landmark's logits do not matter
    scrambled = tuple(e.at[..., 1].set(jnp.arange(e.shape[1]) * 3.0) for e in exact)
    again = float(task.loss((*scrambled, jnp.zeros((1, 2))), batch)[0])
    assert again == pytest.approx(best, abs=1e-6)


def test_planes_need_volumes_and_landmarks_need_points_one_line():
    with pytest.raises(
        TaskDataMismatch, match=r"classifies the planes of volumes; the data is 2-D"
    ):
        PlaneLandmarkTask().configure(fake_data((1.0, 1.0), (8, 8)))
    with pytest.raises(
        TaskDataMismatch,
        match=(
            r"^task=landmarks needs a points field 'landmarks'; data=cine has no field "
            r"'landmarks' \(its fields: .*\)$"
        ),
    ):
        HeatmapLandmarkTask().configure(
            fake_data((1.0, 1.0), (8, 8), cine_schema()),
            task_name="landmarks",
            data_name="cine",
        )


def test_decode_gives_one_example_for_medjax_predict():
    task = heatmap_task(landmark_names=("a", "b", "c"))
    maps = heatmaps.gaussian_heatmaps(POINTS_2D, (40, 36), 2.0, jnp.asarray(VALID))
    # traced, as medjax-predict's locator runs it (under jit and vmap)
    decoded = jax.jit(task.decode)(maps[None])
    assert set(decoded) == {"points", "scores", "valid"}
    np.testing.assert_allclose(decoded["points"][:2], POINTS_2D[:2], atol=0.05)
    assert decoded["valid"].tolist() == [True, True, False]
    assert task.point_names == ("a", "b", "c")
    assert task.prediction_role() == "points"


def test_softmax_heatmaps_decode_logits_and_price_the_absent_bin():
    task = heatmap_task(loss_function="softmax")
    batch = batch_of(POINTS_2D, VALID, (40, 36))
    log_maps = jnp.log(
        jnp.maximum(heatmaps.gaussian_heatmaps(POINTS_2D, (40, 36), 2.0), 1e-30)
    )
    logits = (jnp.maximum(log_maps, -60.0) + 8.0).at[..., 2].set(-30.0)
    points, scores = task.locate(logits[None])
    np.testing.assert_allclose(points[0, :2], POINTS_2D[:2], atol=1e-3)
    np.testing.assert_allclose(scores[0], [1, 1, 0], atol=1e-3)
    # flat logits 0: every map is uniform over 1440 voxels and the absent bin,
    # so each landmark costs log(1441) whether present or absent
    flat = task.loss(jnp.zeros((1, 40, 36, 3)), batch)[0]
    assert float(flat) == pytest.approx(np.log(1441.0), rel=1e-5)
    assert float(task.loss(logits[None], batch)[0]) < float(flat)
