"""Detection ops: box deltas, anchor grids, NMS with a fixed number of outputs."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from medjax.ops import boxes, detection
from tests.ops.test_boxes import _numpy_iou, _random_boxes


def test_encode_of_a_hand_made_pair():
    # Anchor rows/cols 0..9: size 10, centre 4.5. Box rows 5..14, cols 0..19:
    # sizes (10, 20), centre (9.5, 9.5). dy = (9.5 - 4.5) / 10 = 0.5, dx = 0.5,
    # dh = log(10 / 10) = 0, dw = log(20 / 10) = log 2; weights (10, 5) scale them.
    anchor = jnp.asarray([0.0, 0.0, 9.0, 9.0])
    box = jnp.asarray([5.0, 0.0, 14.0, 19.0])
    np.testing.assert_allclose(
        detection.encode_boxes(box, anchor), [0.5, 0.5, 0.0, math.log(2)], atol=1e-6
    )
    np.testing.assert_allclose(
        detection.encode_boxes(box, anchor, (10.0, 5.0)),
        [5.0, 5.0, 0.0, 5 * math.log(2)],
        atol=1e-5,
    )


def test_decode_inverts_encode_in_2d_and_3d():
    rng = np.random.default_rng(1)
    for ndim, weights in ((2, (10.0, 5.0)), (3, (1.0, 1.0))):
        anchors = jnp.asarray(_random_boxes(rng, 11, ndim), jnp.float32)
        targets = jnp.asarray(_random_boxes(rng, 11, ndim), jnp.float32)
        encode = jax.jit(functools.partial(detection.encode_boxes, weights=weights))
        decode = jax.jit(functools.partial(detection.decode_boxes, weights=weights))
        deltas = encode(targets, anchors)
        decoded = decode(deltas, anchors)
        np.testing.assert_allclose(decoded, targets, atol=1e-4)
        # And the other way round: deltas survive a decode then an encode.
        deltas = jnp.asarray(rng.normal(0, 0.5, (11, 2 * ndim)), jnp.float32)
        again = encode(decode(deltas, anchors), anchors)
        np.testing.assert_allclose(again, deltas, atol=1e-4)


def test_decode_clamps_the_log_size_delta():
    anchor = jnp.asarray([0.0, 0.0, 15.0, 15.0])  # 16 voxels a side
    decoded = detection.decode_boxes(jnp.asarray([0.0, 0.0, 100.0, 100.0]), anchor)
    # exp(log(1000 / 16)) * 16 = 1000 voxels a side, about the same centre 7.5.
    np.testing.assert_allclose(boxes.box_size(decoded), [1000.0, 1000.0], rtol=1e-5)
    np.testing.assert_allclose(decoded[:2] + decoded[2:], [15.0, 15.0], atol=1e-3)


def test_grid_anchors_count_order_and_centres():
    anchors = detection.grid_anchors(
        (3, 5), 4, sizes=(8, 16), aspect_ratios=(0.5, 1, 2)
    )
    per_location = detection.anchors_per_location((8, 16), (0.5, 1, 2))
    assert per_location == 6 and anchors.shape == (3 * 5 * 6, 4)
    # Cell (0, 0) covers voxels 0..3: centre 1.5. Ratio 1, size 8 (third anchor):
    # 1.5 -/+ (8 - 1) / 2.
    np.testing.assert_allclose(anchors[2], [-2.0, -2.0, 5.0, 5.0])
    # Location (2, 4) is the 15th: anchors 84..89, centred on (2.5 * 4 - 0.5,
    # 4.5 * 4 - 0.5) = (9.5, 17.5).
    last = anchors[84:90]
    np.testing.assert_allclose((last[:, :2] + last[:, 2:]) / 2, [[9.5, 17.5]] * 6)
    sizes = np.asarray(boxes.box_size(last))
    # Ratio 2 (height / width), size 16: 16 * sqrt 2 high, 16 / sqrt 2 wide.
    np.testing.assert_allclose(sizes[5], [16 * 2**0.5, 16 / 2**0.5], rtol=1e-6)
    np.testing.assert_allclose(sizes.prod(1), [64, 256] * 3, rtol=1e-5)


def test_grid_anchors_in_3d_are_cubes():
    anchors = detection.grid_anchors((2, 2, 3), (2, 2, 4), sizes=(4,))
    assert anchors.shape == (12, 6)
    np.testing.assert_allclose(
        anchors[0], [-1, -1, -0, 2, 2, 3]
    )  # centre 0.5, 0.5, 1.5
    np.testing.assert_allclose(anchors[-1], [1, 1, 8, 4, 4, 11])  # 2.5, 2.5, 9.5


def _numpy_nms(box, score, threshold, classes=None):
    """Greedy NMS: by descending score (ties: lower index), keep a box unless a
    kept box of its class overlaps it by more than the threshold."""
    order = np.argsort(-score, kind="stable")
    overlap = _numpy_iou(box, box)
    classes = np.zeros(len(box)) if classes is None else classes
    kept = []
    for i in order:
        if all(overlap[i, k] <= threshold or classes[i] != classes[k] for k in kept):
            kept.append(i)
    return kept


def _crowded(rng, count, ndim):
    return _random_boxes(rng, count, ndim, size=12.0), rng.random(count)


def test_nms_matches_a_numpy_reference_and_pads_to_k():
    rng = np.random.default_rng(2)
    for ndim in (2, 3):
        box, score = _crowded(rng, 40, ndim)
        expected = _numpy_nms(box, score, 0.3)
        assert 3 < len(expected) < 40  # some boxes suppressed, some kept
        indices, kept = detection.nms(
            jnp.asarray(box, jnp.float32),
            jnp.asarray(score, jnp.float32),
            iou_threshold=0.3,
            max_output=40,
        )
        count = len(expected)
        np.testing.assert_array_equal(indices[:count], expected)
        np.testing.assert_array_equal(kept, np.arange(40) < count)
        np.testing.assert_array_equal(indices[count:], -1)
        if ndim == 3:
            continue
        # A smaller K keeps the best K of the same list.
        indices, kept = detection.nms(
            jnp.asarray(box, jnp.float32),
            jnp.asarray(score, jnp.float32),
            iou_threshold=0.3,
            max_output=3,
        )
        np.testing.assert_array_equal(indices, expected[:3])
        assert kept.all()


def test_nms_vmapped_over_a_batch_with_padding_and_a_score_floor():
    rng = np.random.default_rng(3)
    sets = [_crowded(rng, 25, 2) for _ in range(2)]
    box = jnp.asarray(np.stack([s[0] for s in sets]), jnp.float32)
    score = jnp.asarray(np.stack([s[1] for s in sets]), jnp.float32)
    valid = jnp.asarray(np.arange(25) < 20)[None].repeat(2, 0)  # 5 padding rows
    run = jax.vmap(
        lambda b, s, v: detection.nms(
            b, s, iou_threshold=0.5, max_output=25, valid=v, score_threshold=0.2
        )
    )
    indices, kept = run(box, score, valid)
    for i, (b, s) in enumerate(sets):
        keep_ok = (np.arange(25) < 20) & (s > 0.2)
        expected = np.flatnonzero(keep_ok)[_numpy_nms(b[keep_ok], s[keep_ok], 0.5)]
        np.testing.assert_array_equal(indices[i][kept[i]], expected)
        np.testing.assert_array_equal(indices[i][~kept[i]], -1)


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    rng = np.random.default_rng(4)
    box, score = _crowded(rng, 30, 2)
    classes = rng.integers(0, 3, 30)
    expected = _numpy_nms(box, score, 0.3, classes)
    assert len(expected) > len(_numpy_nms(box, score, 0.3))  # classes matter here
    indices, kept = detection.batched_nms(
        jnp.asarray(box, jnp.float32),
        jnp.asarray(score, jnp.float32),
        jnp.asarray(classes),
        iou_threshold=0.3,
        max_output=30,
    )
    np.testing.assert_array_equal(indices[kept], expected)
    # Two identical boxes: one survives when they share a class, both otherwise.
    same = jnp.asarray([[0.0, 0.0, 4.0, 4.0]] * 2)
    scores = jnp.asarray([0.9, 0.8])
    _, kept = detection.batched_nms(
        same, scores, jnp.asarray([1, 1]), iou_threshold=0.5, max_output=2
    )
    np.testing.assert_array_equal(kept, [True, False])
    _, kept = detection.batched_nms(
        same, scores, jnp.asarray([0, 2]), iou_threshold=0.5, max_output=2
    )
    np.testing.assert_array_equal(kept, [True, True])
