"""Faster R-CNN model: static shapes, proposals against the ops, final
detections of a perfect box head, pyramid levels, parameter groups."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import groups
from medjax.models.detection import box_head, rpn
from medjax.models.detection.faster_rcnn import FasterRCNN, faster_rcnn_tiny
from medjax.ops import boxes as box_ops
from medjax.ops import detection
from medjax.runtime import random_key

SHAPE = (2, 37, 29, 1)  # odd sizes: stride-2 maps of 19 x 15, then 10 x 8
TRUTH = jnp.asarray([[[3, 4, 9, 10], [20, 5, 25, 12], [0, 0, 0, 0]]] * 2, jnp.float32)
TRUTH_VALID = jnp.asarray([[True, True, False]] * 2)


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset (two foreground classes, a two-level pyramid) with its
    variables and jitted outputs in training and inference."""
    model = faster_rcnn_tiny(
        num_classes=2,
        levels=(1, 2),
        fpn_width=8,
        anchor_sizes=((4.0,), (8.0,)),
    )
    images = jax.random.normal(random_key(0), SHAPE)
    variables = jax.jit(lambda k, x: model.init(k, x, train=False))(
        random_key(1), images
    )
    train = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
    )((variables), (images, TRUTH, TRUTH_VALID))
    infer = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
    return model, variables, images, train, infer


def test_outputs_have_static_shapes_for_odd_images(tiny):
    model, _, _, train, infer = tiny
    # Anchors: one size per location on the 19 x 15 and 10 x 8 maps.
    anchors = 19 * 15 + 10 * 8
    proposals, detections = model.post_nms_top_k, model.max_detections
    expected = {
        "anchors": (2, anchors, 4),
        "rpn_logits": (2, anchors),
        "rpn_deltas": (2, anchors, 4),
        "proposals": (2, proposals, 4),
        "proposal_valid": (2, proposals),
        "roi_logits": (2, proposals, 3),
        "roi_deltas": (2, proposals, 2, 4),
        "boxes": (2, detections, 4),
        "scores": (2, detections),
        "labels": (2, detections),
        "valid": (2, detections),
    }
    for key, shape in expected.items():
        assert infer[key].shape == shape, key
    # Training appends the 3 truth rows to the proposals.
    assert train["rois"].shape == (2, proposals + 3, 4)
    np.testing.assert_array_equal(train["rois"][:, proposals:], TRUTH)
    np.testing.assert_array_equal(
        train["roi_valid"][:, proposals:], np.asarray(TRUTH_VALID)
    )
    assert "boxes" not in train
    # Given an image alone in training (no truth), the RoIs are the proposals.
    for key in ("boxes", "scores"):
        assert np.isfinite(np.asarray(infer[key])).all()
    assert infer["valid"].any()


def test_anchors_are_the_grid_anchors_of_both_levels(tiny):
    _, _, _, _, infer = tiny
    expected = jnp.concatenate(
        [
            detection.grid_anchors((19, 15), 2, (4.0,)),
            detection.grid_anchors((10, 8), 4, (8.0,)),
        ]
    )
    np.testing.assert_allclose(infer["anchors"][1], expected)


def test_proposals_are_the_nms_of_the_decoded_best_anchors(tiny):
    model, _, _, _, infer = tiny
    for b in range(2):
        logits, deltas = infer["rpn_logits"][b], infer["rpn_deltas"][b]
        anchors = infer["anchors"][b]
        top, order = jax.lax.top_k(logits, model.pre_nms_top_k)
        decoded = detection.decode_boxes(deltas[order], anchors[order])
        clipped, inside = box_ops.clip_to_image(decoded, SHAPE[1:3])
        indices, kept = detection.nms(
            clipped,
            top,
            iou_threshold=model.rpn_iou_threshold,
            max_output=model.post_nms_top_k,
            valid=inside,
        )
        count = int(kept.sum())
        assert count > 0
        np.testing.assert_array_equal(infer["proposal_valid"][b], np.asarray(kept))
        np.testing.assert_allclose(
            infer["proposals"][b][:count], clipped[indices[:count]], atol=1e-5
        )
        np.testing.assert_allclose(
            infer["proposal_scores"][b][:count],
            jax.nn.sigmoid(top[indices[:count]]),
            atol=1e-6,
        )


def _numpy_nms(boxes, scores, threshold):
    """Greedy NMS, the textbook loop (inclusive voxel sizes)."""
    order, kept = list(np.argsort(-scores, kind="stable")), []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [
            i
            for i in order
            if np.asarray(box_ops.iou(boxes[best][None], boxes[i][None]))[0, 0]
            <= threshold
        ]
    return kept


def test_propose_keeps_what_a_numpy_nms_keeps():
    rng = np.random.default_rng(0)
    anchors = detection.grid_anchors((6, 5), 4, (6.0, 10.0))
    logits = jnp.asarray(rng.normal(size=len(anchors)), jnp.float32)
    deltas = jnp.asarray(rng.normal(scale=0.3, size=(len(anchors), 4)), jnp.float32)
    boxes, _scores, valid = rpn.propose(
        logits,
        deltas,
        anchors,
        (24, 20),
        pre_nms_top_k=40,
        post_nms_top_k=50,
        iou_threshold=0.5,
    )
    top = np.argsort(-np.asarray(logits), kind="stable")[:40]
    decoded = np.asarray(detection.decode_boxes(deltas[top], anchors[top]))
    decoded = np.concatenate(
        [np.clip(decoded[:, :2], 0, [23, 19]), np.clip(decoded[:, 2:], 0, [23, 19])], 1
    )
    kept = _numpy_nms(decoded, np.asarray(logits)[top], 0.5)
    assert int(valid.sum()) == len(kept) < 50
    np.testing.assert_allclose(boxes[: len(kept)], decoded[kept], atol=1e-5)
    assert not np.asarray(boxes[len(kept) :]).any()


def test_a_perfect_box_head_decodes_to_the_truth():
    rois = jnp.asarray([[2, 3, 8, 9], [10, 10, 20, 16], [0, 0, 5, 5]], jnp.float32)
    truth = jnp.asarray([[3, 3, 9, 10], [11, 9, 19, 17], [1, 1, 4, 4]], jnp.float32)
    classes = jnp.asarray([1, 0, 1])
    # Per-class deltas: the truth class's moves its RoI onto its truth box, the
    # other class's are noise it scores too low to matter.
    deltas = jnp.tile(
        detection.encode_boxes(truth, rois, box_head.BOX_WEIGHTS)[:, None], (1, 2, 1)
    )
    deltas = deltas.at[jnp.arange(3), 1 - classes].set(3.0)
    logits = jnp.full((3, 3), -10.0).at[jnp.arange(3), classes + 1].set(10.0)
    detect = jax.jit(
        lambda *a: box_head.detect(*a, (32, 32), max_detections=5, score_threshold=0.01)
    )
    boxes, scores, labels, valid = detect(logits, deltas, rois, jnp.ones(3, bool))
    assert valid.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(scores[:3], 1.0, atol=1e-6)
    # Scores tie at 1: match each detection to its truth row by position.
    rows = [int(np.argmin(np.abs(truth - box).sum(1))) for box in np.asarray(boxes[:3])]
    assert sorted(rows) == [0, 1, 2]
    np.testing.assert_allclose(boxes[:3], truth[np.asarray(rows)], atol=1e-4)
    np.testing.assert_array_equal(labels[:3], classes[np.asarray(rows)])


def test_boxes_are_pooled_from_the_level_nearest_their_size():
    boxes = jnp.asarray([[0, 0, 3, 3], [0, 0, 5, 6], [0, 0, 15, 15], [0, 0, 0, 40]])
    # Level sizes 4 and 12: geometric means 4, 6.5, 16 and sqrt(41) = 6.4.
    levels = box_head.level_of_boxes(boxes.astype(jnp.float32), (4.0, 12.0))
    assert levels.tolist() == [0, 0, 1, 0]
    assert math.sqrt(4 * 12) > 6.5  # the boundary is the geometric mean


def test_pool_rois_reads_each_box_from_its_level():
    fine = jnp.zeros((1, 8, 8, 1))
    coarse = jnp.ones((1, 4, 4, 1))
    rois = jnp.asarray([[[0, 0, 3, 3], [0, 0, 15, 15]]], jnp.float32)
    pooled = box_head.pool_rois(
        [fine, coarse], (2, 4), rois, output_size=(2, 2), level_sizes=(4.0, 12.0)
    )
    np.testing.assert_allclose(pooled[0, 0], 0.0)
    np.testing.assert_allclose(pooled[0, 1], 1.0)


def test_parameter_groups_declare_the_backbone_stages(tiny):
    model, variables, *_ = tiny
    declared = groups.groups_of(model)
    backbone = declared.deepest
    assert backbone.num_stages == 3
    params = variables["params"]
    for stage in backbone.stages:
        for path in stage:
            node = params
            for part in path.split("/"):
                node = node[part]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    paths = [tuple(part.key for part in path) for path, _ in leaves]
    heads = {path[0] for path in paths if declared.locate(path) is None}
    assert heads == {"box_head", "fpn", "rpn"}
    assert {declared.locate(p)[1] for p in paths if p[0] == "backbone"} == {0, 1, 2}
    frozen = model.with_frozen_statistics(2)
    assert frozen.frozen_stages == 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"levels": (1, 2), "anchor_sizes": ((4.0,), (8.0,))}, "fpn_width"),
        ({"anchor_sizes": ((4.0,), (8.0,))}, "one tuple per level"),
        (
            {"levels": (1, 2), "fpn_width": 4, "anchor_sizes": ((4.0,), (8.0, 16.0))},
            "as many",
        ),
        ({"levels": (5,), "anchor_sizes": ((4.0,),)}, "stages 0..2"),
    ],
)
def test_bad_options_fail_with_one_message(options, message):
    model = faster_rcnn_tiny(num_classes=1, **options)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(
            lambda: model.init(random_key(0), jnp.zeros(SHAPE), train=False)
        )


def test_presets_build():
    model = FasterRCNN(num_classes=1)
    assert model.strides == (4,)
    assert faster_rcnn_tiny(num_classes=1, stem="imagenet").strides == (16,)
