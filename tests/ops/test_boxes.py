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
