"""Boxes: corners, the box of moved corners, clipping to the image."""

import functools

import jax.numpy as jnp
import numpy as np

from medjax.ops import boxes, spatial


def test_corners_of_a_2d_box_and_back():
    box = jnp.asarray([[1.0, 2.0, 4.0, 7.0]])  # rows 1..4, columns 2..7
    corners = boxes.corners(box)
    np.testing.assert_array_equal(corners[0], [[1, 2], [1, 7], [4, 2], [4, 7]])
    np.testing.assert_array_equal(boxes.from_corners(corners), box)


def test_a_3d_box_has_eight_distinct_corners():
    box = jnp.asarray([0.0, 1.0, 2.0, 3.0, 5.0, 8.0])
    corners = np.asarray(boxes.corners(box))
    assert corners.shape == (8, 3)
    assert len({tuple(c) for c in corners}) == 8
    np.testing.assert_array_equal(corners.min(0), [0, 1, 2])
    np.testing.assert_array_equal(corners.max(0), [3, 5, 8])


def test_a_quarter_turn_swaps_the_box_axes_about_the_centre():
    # About centre (5, 5) a positive quarter turn maps (r, c) to (10 - c, r)...
    matrix = spatial.affine_matrix(
        2, rotation=jnp.pi / 2, center=jnp.asarray([5.0, 5.0])
    )
    box = jnp.asarray([[1.0, 2.0, 3.0, 6.0]])
    moved = boxes.move(box, functools.partial(spatial.transform_points, matrix))
    # ...so rows 1..3, columns 2..6 become rows 4..8, columns 1..3.
    np.testing.assert_allclose(moved, [[4.0, 1.0, 8.0, 3.0]], atol=1e-5)


def test_a_rotated_box_holds_its_rotated_corners():
    matrix = spatial.affine_matrix(
        2, rotation=jnp.asarray(0.4), center=jnp.asarray([6.0, 5.0])
    )
    box = jnp.asarray([[2.0, 3.0, 5.0, 9.0], [4.0, 4.0, 4.0, 4.0]])
    moved = boxes.move(box, functools.partial(spatial.transform_points, matrix))
    for b, m in zip(np.asarray(box), np.asarray(moved), strict=True):
        (r0, c0, r1, c1) = b
        points = np.asarray([[r0, c0], [r0, c1], [r1, c0], [r1, c1]], np.float32)
        linear, offset = np.asarray(matrix[:2, :2]), np.asarray(matrix[:2, 2])
        landed = points @ linear.T + offset
        np.testing.assert_allclose(m[:2], landed.min(0), atol=1e-5)
        np.testing.assert_allclose(m[2:], landed.max(0), atol=1e-5)
    # A rotated box is larger than the box it came from.
    assert (moved[0, 2:] - moved[0, :2]).prod() > (box[0, 2:] - box[0, :2]).prod()


def test_clipping_keeps_overlapping_boxes_and_flags_the_others():
    box = jnp.asarray(
        [[-2.0, 3.0, 4.0, 12.0], [2.0, 2.0, 3.0, 3.0], [-5.0, 0.0, -1.0, 4.0]]
    )
    clipped, overlaps = boxes.clip_to_image(box, (8, 10))
    np.testing.assert_array_equal(clipped, [[0, 3, 4, 9], [2, 2, 3, 3], [0, 0, 0, 4]])
    np.testing.assert_array_equal(overlaps, [True, True, False])


def _numpy_iou(a, b):
    """Pairwise IoU by loops, sizes max - min + 1 (the inclusive convention)."""
    ndim = a.shape[1] // 2
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            inter = np.prod(
                [
                    max(0.0, min(p[ndim + k], q[ndim + k]) - max(p[k], q[k]) + 1)
                    for k in range(ndim)
                ]
            )
            vol_p = np.prod(p[ndim:] - p[:ndim] + 1)
            vol_q = np.prod(q[ndim:] - q[:ndim] + 1)
            out[i, j] = inter / (vol_p + vol_q - inter)
    return out


def _random_boxes(rng, count, ndim, size=20.0):
    low = rng.uniform(0, size, (count, ndim))
    return np.concatenate([low, low + rng.uniform(0, size / 2, (count, ndim))], 1)


def test_iou_of_hand_made_boxes_counts_voxels_inclusively():
    # Rows 0..1 x cols 0..1 (4 voxels) and rows 1..2 x cols 1..2 (4 voxels) share
    # voxel (1, 1): IoU = 1 / (4 + 4 - 1) = 1/7. A box touching at no voxel: 0.
    a = jnp.asarray([[0.0, 0.0, 1.0, 1.0]])
    b = jnp.asarray([[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(boxes.iou(a, b), [[1 / 7, 0.0, 1.0]], rtol=1e-6)
    # A single voxel box has size 1, volume 1.
    np.testing.assert_allclose(boxes.box_volume(jnp.asarray([3.0, 3.0, 3.0, 3.0])), 1)


def test_iou_matches_a_numpy_reference_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for ndim in (2, 3):
        a, b = _random_boxes(rng, 7, ndim), _random_boxes(rng, 5, ndim)
        expected = _numpy_iou(a, b)
        assert (expected > 0).sum() >= 3  # some pairs overlap: the test can fail
        got = boxes.iou(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_boxes_from_instances_of_a_hand_made_mask():
    mask = np.zeros((6, 7), np.int32)
    mask[1:3, 2:5] = 1  # rows 1..2, cols 2..4
    mask[4, 0] = 3  # one voxel
    mask[5, 6] = 3  # same id elsewhere: the extent covers both pieces
    mask[0, 0] = 9  # above max_instances: left out
    got, valid = boxes.boxes_from_instances(mask, 4)
    np.testing.assert_array_equal(valid, [True, False, True, False])
    np.testing.assert_array_equal(
        got, [[1, 2, 2, 4], [0, 0, 0, 0], [4, 0, 5, 6], [0, 0, 0, 0]]
    )


def test_boxes_from_instances_in_3d():
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:4, 2, 3:5] = 2
    got, valid = boxes.boxes_from_instances(jnp.asarray(mask), 2)
    np.testing.assert_array_equal(valid, [False, True])
    np.testing.assert_array_equal(got[1], [1, 2, 3, 3, 2, 4])
