"""Training targets and losses of a two-stage detector, inside jit: anchors
and proposals matched to the truth boxes by IoU, a fixed-size balanced sample
drawn with a key, and the losses of both stages (torchvision's
``RegionProposalNetwork`` and ``RoIHeads`` rules, per example).

All functions work on one image (vmap over a batch). Boxes follow
``medjax.ops.boxes``; deltas ``medjax.ops.detection``.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from medjax.ops import boxes as boxes_lib
from medjax.ops import detection

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1
# torchvision's smooth-L1 beta for both stages' box losses.
SMOOTH_L1_BETA = 1.0 / 9


def match_boxes(
    boxes: jnp.ndarray,
    truth: jnp.ndarray,
    truth_valid: jnp.ndarray,
    *,
    positive_iou: float,
    negative_iou: float,
    allow_low_quality: bool,
    valid: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """torchvision's ``Matcher``: each box takes the truth box it overlaps
    most; IoU >= ``positive_iou`` is positive, < ``negative_iou`` negative,
    in between ignored. With ``allow_low_quality`` every truth box also makes
    positive the boxes that overlap it most (ties included), so no truth box
    is left without a positive.

    Args:
        boxes: ``[N, 2 * ndim]`` anchors or proposals.
        truth: ``[G, 2 * ndim]``.
        truth_valid: ``[G]`` bool; invalid rows match nothing.
        positive_iou / negative_iou: the thresholds.
        allow_low_quality: the best boxes of each truth box are positive.
        valid: ``[N]`` bool, boxes that take part (others are ``IGNORED``).

    Returns:
        ``(labels [N] int32 in {POSITIVE, NEGATIVE, IGNORED}, matched [N]
        int32 the truth row of each box (0 when none is valid), best_iou [N])``.
    """
    overlap = jnp.where(truth_valid[None, :], boxes_lib.iou(boxes, truth), -1.0)
    if valid is not None:
        overlap = jnp.where(valid[:, None], overlap, -1.0)
    best_iou = overlap.max(axis=1)
    matched = jnp.argmax(overlap, axis=1).astype(jnp.int32)
    positive = best_iou >= positive_iou
    if allow_low_quality:
        best_of_truth = overlap.max(axis=0)  # [G]
        # A truth box overlapping no box at all (IoU 0) makes nothing positive.
        is_best = (
            (overlap == best_of_truth[None, :])
            & truth_valid[None, :]
            & (best_of_truth[None, :] > 0)
        )
        positive = positive | is_best.any(axis=1)
    # Without a valid truth box best_iou is -1: every box is negative.
    negative = (best_iou < negative_iou) & ~positive
    if valid is not None:
        negative = negative & valid
    labels = jnp.where(positive, POSITIVE, jnp.where(negative, NEGATIVE, IGNORED))
    return labels.astype(jnp.int32), matched, best_iou


def _first_by_priority(candidates: jnp.ndarray, priority: jnp.ndarray, count):
    """``candidates`` cut to the ``count`` of them with the lowest priority."""
    order = jnp.argsort(jnp.where(candidates, priority, jnp.inf))
    rank = (
        jnp.zeros(candidates.shape, jnp.int32)
        .at[order]
        .set(jnp.arange(candidates.shape[0], dtype=jnp.int32))
    )
    return candidates & (rank < count)


def sample_balanced(
    key: jax.Array,
    labels: jnp.ndarray,
    *,
    num_samples: int,
    positive_fraction: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """torchvision's ``BalancedPositiveNegativeSampler``: at most
    ``num_samples * positive_fraction`` positives drawn uniformly without
    replacement, then negatives to fill ``num_samples`` (fewer when there are
    fewer of either).

    Args:
        key: PRNG key.
        labels: ``[N]`` from :func:`match_boxes` (``POSITIVE`` or ``> 0``
            counts as positive, ``NEGATIVE`` (0) negative, ``IGNORED`` neither).
        num_samples: the sample size.
        positive_fraction: the largest share of positives.

    Returns:
        ``(positive [N] bool, negative [N] bool)``, disjoint.
    """
    positive, negative = labels > 0, labels == NEGATIVE
    num_positive = jnp.minimum(positive.sum(), int(num_samples * positive_fraction))
    num_negative = jnp.minimum(negative.sum(), num_samples - num_positive)
    priority = jax.random.uniform(key, labels.shape)
    return (
        _first_by_priority(positive, priority, num_positive),
        _first_by_priority(negative, priority, num_negative),
    )


def smooth_l1(x: jnp.ndarray, beta: float = SMOOTH_L1_BETA) -> jnp.ndarray:
    """torchvision's smooth L1 (``0.5 x^2 / beta`` within ``beta``, ``|x| -
    beta / 2`` beyond), as optax's Huber loss divided by ``beta``."""
    return optax.huber_loss(x, delta=beta) / beta


def rpn_loss(
    key: jax.Array,
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    truth: jnp.ndarray,
    truth_valid: jnp.ndarray,
    *,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    num_samples: int = 256,
    positive_fraction: float = 0.5,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The RPN's objectness (binary cross-entropy over the sampled anchors)
    and box (smooth L1 of the positives' deltas, summed over coordinates)
    losses of one image, both divided by the number sampled.

    Args:
        key: of the sampling.
        logits: ``[N]``; deltas: ``[N, 2 * ndim]``; anchors: ``[N, 2 * ndim]``.
        truth: ``[G, 2 * ndim]``; truth_valid: ``[G]``.

    Returns:
        ``(objectness, box)`` scalars.
    """
    labels, matched, _ = match_boxes(
        anchors,
        truth,
        truth_valid,
        positive_iou=positive_iou,
        negative_iou=negative_iou,
        allow_low_quality=True,
    )
    positive, negative = sample_balanced(
        key, labels, num_samples=num_samples, positive_fraction=positive_fraction
    )
    sampled = positive | negative
    count = jnp.maximum(sampled.sum(), 1)
    bce = optax.sigmoid_binary_cross_entropy(
        logits.astype(jnp.float32), positive.astype(jnp.float32)
    )
    objectness = jnp.where(sampled, bce, 0.0).sum() / count
    targets = detection.encode_boxes(truth[matched], anchors)
    box = jnp.where(positive[:, None], smooth_l1(deltas - targets), 0.0).sum() / count
    return objectness, box


def box_head_loss(
    key: jax.Array,
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    rois: jnp.ndarray,
    roi_valid: jnp.ndarray,
    truth: jnp.ndarray,
    truth_labels: jnp.ndarray,
    truth_valid: jnp.ndarray,
    *,
    positive_iou: float = 0.5,
    num_samples: int = 64,
    positive_fraction: float = 0.25,
    weights: Sequence[float] = (10.0, 5.0),
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The box head's classification (softmax cross-entropy over the sampled
    RoIs, class 0 background) and box (smooth L1 of the positives' deltas for
    their truth class) losses of one image, both divided by the number
    sampled; and the accuracy of the sampled RoIs' classes.

    Args:
        key: of the sampling.
        logits: ``[R, C + 1]``; deltas: ``[R, C or 1, 2 * ndim]``.
        rois: ``[R, 2 * ndim]``; roi_valid: ``[R]``.
        truth: ``[G, 2 * ndim]``; truth_labels: ``[G]`` foreground classes
            ``0..C-1``; truth_valid: ``[G]``.
        positive_iou: IoU from which a RoI takes its truth box's class
            (torchvision's 0.5; below it is background).
        weights: of the deltas (the box head's ``(10, 5)``).

    Returns:
        ``(classification, box, accuracy)`` scalars.
    """
    matches, matched, _ = match_boxes(
        rois,
        truth,
        truth_valid,
        positive_iou=positive_iou,
        negative_iou=positive_iou,
        allow_low_quality=False,
        valid=roi_valid,
    )
    classes = jnp.where(matches == POSITIVE, truth_labels[matched] + 1, 0)
    labels = jnp.where(matches == IGNORED, IGNORED, classes)
    positive, negative = sample_balanced(
        key, labels, num_samples=num_samples, positive_fraction=positive_fraction
    )
    sampled = positive | negative
    count = jnp.maximum(sampled.sum(), 1)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), classes
    )
    classification = jnp.where(sampled, ce, 0.0).sum() / count
    right = (jnp.argmax(logits, -1) == classes) & sampled
    accuracy = right.sum() / count
    if deltas.shape[1] > 1:  # per-class deltas: those of the truth class
        chosen = jnp.maximum(classes - 1, 0)
    else:
        chosen = jnp.zeros_like(classes)
    own = jnp.take_along_axis(deltas, chosen[:, None, None], axis=1)[:, 0]
    targets = detection.encode_boxes(truth[matched], rois, weights)
    # Invalid RoIs (zero boxes) are never positive; keep their targets finite.
    targets = jnp.where(positive[:, None], targets, 0.0)
    errors = jnp.where(positive[:, None], smooth_l1(own - targets), 0.0)
    return classification, errors.sum() / count, accuracy
