"""Two-stage detector targets: matching against a numpy reference, balanced
sampling counts, the smooth-L1 and the losses on hand-made cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.ops import detection
from medjax.runtime import random_key
from medjax.tasks.detection import rcnn_targets as targets


def _numpy_iou(a, b):
    """IoU with inclusive voxel sizes, by loops."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            low, high = np.maximum(p[:2], q[:2]), np.minimum(p[2:], q[2:])
            inter = np.prod(np.maximum(high - low + 1, 0))
            area = lambda box: np.prod(np.maximum(box[2:] - box[:2] + 1, 0))
            union = area(p) + area(q) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def _numpy_match(boxes, truth, truth_valid, positive, negative, low_quality):
    """torchvision's Matcher, written out with loops."""
    overlap = _numpy_iou(boxes, truth)
    overlap[:, ~truth_valid] = -1
    labels = np.full(len(boxes), targets.IGNORED)
    best = overlap.max(1)
    labels[best < negative] = targets.NEGATIVE
    labels[best >= positive] = targets.POSITIVE
    if low_quality:
        for g in np.flatnonzero(truth_valid):
            top = overlap[:, g].max()
            if top > 0:
                labels[overlap[:, g] == top] = targets.POSITIVE
    return labels, overlap.argmax(1), best


def _random_boxes(rng, count, size=40):
    low = rng.integers(0, size - 4, (count, 2))
    extent = rng.integers(1, 14, (count, 2))
    return np.concatenate([low, low + extent], 1).astype(np.float32)


@pytest.mark.parametrize("low_quality", [True, False])
def test_matching_agrees_with_a_numpy_reference(low_quality):
    rng = np.random.default_rng(3)
    match = jax.jit(
        lambda b, t, v: targets.match_boxes(
            b, t, v, positive_iou=0.5, negative_iou=0.3, allow_low_quality=low_quality
        )
    )
    for trial in range(5):
        boxes, truth = _random_boxes(rng, 60), _random_boxes(rng, 4)
        valid = np.array([True, True, trial % 2 == 0, False])
        # A duplicate box ties for best with its twin: both become positive.
        boxes[7] = boxes[3]
        # Some boxes near the truth: positives above 0.5 without the low-quality rule.
        boxes[10:14] = truth + rng.integers(-1, 2, truth.shape)
        labels, matched, best = match(boxes, truth, valid)
        want_labels, want_matched, want_best = _numpy_match(
            boxes, truth, valid, 0.5, 0.3, low_quality
        )
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_allclose(best, want_best, atol=1e-6)
        matched_rows = want_best >= 0
        np.testing.assert_array_equal(
            np.asarray(matched)[matched_rows], want_matched[matched_rows]
        )
        assert (np.asarray(labels) == targets.POSITIVE).sum() > 0


def test_without_truth_every_box_is_negative_and_invalid_boxes_ignored():
    boxes = jnp.asarray([[0, 0, 4, 4], [5, 5, 9, 9], [0, 0, 0, 0]], jnp.float32)
    truth = jnp.zeros((2, 4))
    labels, _, best = targets.match_boxes(
        boxes,
        truth,
        jnp.zeros(2, bool),
        positive_iou=0.7,
        negative_iou=0.3,
        allow_low_quality=True,
        valid=jnp.asarray([True, True, False]),
    )
    assert labels.tolist() == [targets.NEGATIVE, targets.NEGATIVE, targets.IGNORED]
    assert best.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "positives, negatives, want_positive, want_negative",
    [(100, 300, 16, 48), (5, 300, 5, 59), (100, 10, 16, 10), (0, 20, 0, 20)],
)
def test_sampling_respects_counts_and_positive_share(
    positives, negatives, want_positive, want_negative
):
    labels = np.full(500, targets.IGNORED)
    labels[:positives] = targets.POSITIVE
    labels[positives : positives + negatives] = targets.NEGATIVE
    labels = jnp.asarray(np.random.default_rng(0).permutation(labels))
    sample = jax.jit(
        lambda k: targets.sample_balanced(
            k, labels, num_samples=64, positive_fraction=0.25
        )
    )
    drawn = []
    for seed in range(3):
        positive, negative = sample(random_key(seed))
        assert int(positive.sum()) == want_positive
        assert int(negative.sum()) == want_negative
        assert not (positive & negative).any()
        assert (labels[positive] > 0).all() and (labels[negative] == 0).all()
        drawn.append(np.asarray(positive | negative))
    if negatives > want_negative:  # a real draw: other keys, other samples
        assert not np.array_equal(drawn[0], drawn[1])


def test_sampling_is_uniform_over_positives():
    labels = jnp.asarray([targets.POSITIVE] * 10 + [targets.NEGATIVE] * 10)
    sample = jax.jit(
        jax.vmap(
            lambda k: targets.sample_balanced(
                k, labels, num_samples=4, positive_fraction=0.5
            )[0]
        )
    )
    counts = np.asarray(sample(jax.random.split(random_key(0), 2000))).sum(0)
    # Each positive is drawn with probability 2/10: 400 of 2000, sd 18.
    assert np.all(np.abs(counts[:10] - 400) < 80) and counts[10:].sum() == 0


def test_smooth_l1_is_torchvisions():
    x = jnp.asarray([0.0, 0.05, -0.1, 0.5, -2.0])
    beta = 1 / 9
    want = [
        0.0,
        0.5 * 0.05**2 / beta,
        0.5 * 0.1**2 / beta,
        0.5 - beta / 2,
        2 - beta / 2,
    ]
    np.testing.assert_allclose(targets.smooth_l1(x), want, rtol=1e-6)


def test_rpn_loss_of_perfect_deltas_is_the_objectness_alone():
    anchors = detection.grid_anchors((4, 4), 4, (6.0,))
    truth = jnp.asarray([[4, 4, 9, 9], [0, 0, 0, 0]], jnp.float32)
    valid = jnp.asarray([True, False])
    labels, matched, _ = targets.match_boxes(
        anchors,
        truth,
        valid,
        positive_iou=0.7,
        negative_iou=0.3,
        allow_low_quality=True,
    )
    positive = labels == targets.POSITIVE
    deltas = detection.encode_boxes(truth[matched], anchors)
    # Logits of +-20 on every positive / other anchor: the BCE is ~2e-9.
    logits = jnp.where(positive, 20.0, -20.0)
    rpn_loss = jax.jit(targets.rpn_loss)
    objectness, box = rpn_loss(random_key(0), logits, deltas, anchors, truth, valid)
    assert float(objectness) < 1e-6 and float(box) < 1e-6
    # Wrong deltas by 1 on one coordinate of the positives: smooth L1 of 1 each.
    objectness, box = rpn_loss(
        random_key(0), logits, deltas.at[:, 0].add(1.0), anchors, truth, valid
    )
    sampled = int((labels != targets.IGNORED).sum())  # all of them: 16 < 256
    np.testing.assert_allclose(box, positive.sum() * (1 - 1 / 18) / sampled, rtol=1e-5)


def test_box_head_loss_hand_case():
    rois = jnp.asarray([[4, 4, 9, 9], [20, 20, 25, 25], [0, 0, 0, 0]], jnp.float32)
    truth = jnp.asarray([[4, 4, 9, 10]], jnp.float32)
    # RoI 0 is foreground class 1 (IoU 36/42), RoI 1 background, RoI 2 padding.
    logits = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    deltas = jnp.zeros((3, 2, 4))
    classification, box, accuracy = jax.jit(targets.box_head_loss)(
        random_key(0),
        logits,
        deltas,
        rois,
        jnp.asarray([True, True, False]),
        truth,
        jnp.asarray([1]),
        jnp.asarray([True]),
    )
    np.testing.assert_allclose(classification, np.log(3), rtol=1e-6)
    target = np.asarray(detection.encode_boxes(truth[0], rois[0], (10.0, 5.0)))
    want = np.asarray(targets.smooth_l1(jnp.asarray(-target))).sum() / 2
    np.testing.assert_allclose(box, want, rtol=1e-5)
    # Every logit 0: argmax is background, right for RoI 1 only.
    np.testing.assert_allclose(accuracy, 0.5)
