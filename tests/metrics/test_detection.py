"""Detection metrics: FROC/CPM (LUNA16's counting) and COCO AP on hand-worked
cases, and FROC against a transcription of LUNA16's evaluation loop."""

import numpy as np
import pytest
import sklearn.metrics

from medjax.metrics import detection


def _two_scans():
    """Scan 1: lesions L1 (10, 10) r 3 and L2 (30, 30) r 4; candidates 0.9 and
    0.6 on L1 (the 0.6 is a second hit: ignored), 0.8 on nothing (FP), 0.3 on
    L2. Scan 2: lesion L3 (5, 5) r 2, missed; candidates 0.7 and 0.2, both FP."""
    first = detection.match_candidates(
        points=[[10, 11], [11, 10], [50, 50], [31, 30]],
        scores=[0.9, 0.6, 0.8, 0.3],
        centres=[[10, 10], [30, 30]],
        radii=[3.0, 4.0],
    )
    second = detection.match_candidates(
        points=[[20, 20], [40, 5]], scores=[0.7, 0.2], centres=[[5, 5]], radii=[2.0]
    )
    return [first, second]


def test_froc_curve_and_cpm_of_a_hand_worked_case():
    matches = _two_scans()
    np.testing.assert_allclose(matches[0].lesion_scores, [0.9, 0.3])
    np.testing.assert_allclose(matches[0].false_positive_scores, [0.8])
    fps, sensitivity, thresholds = detection.froc_curve(matches)
    # Lesion scores 0.9, 0.3, -inf (3 lesions); FP scores 0.8, 0.7, 0.2 (2 scans).
    # t = 0.9: 1 TP 0 FP; 0.8: 1, 1; 0.7: 1, 2; 0.3: 2, 2; 0.2: 2, 3.
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.8, 0.7, 0.3, 0.2])
    np.testing.assert_allclose(fps, [0, 0, 0.5, 1.0, 1.0, 1.5])
    np.testing.assert_allclose(sensitivity, [0, 1, 1, 1, 2, 2] / np.float64(3))
    result = detection.froc(matches)
    # 1/8, 1/4, 1/2 FP/scan: 1/3 (flat from (0, 1/3) to (1, 1/3)); 1: the rise at
    # 1 FP/scan gives 2/3; 2, 4, 8: past the last point, held at 2/3.
    np.testing.assert_allclose(result["sensitivities"], [1 / 3] * 3 + [2 / 3] * 4)
    # CPM = (3 * 1/3 + 4 * 2/3) / 7 = (11/3) / 7 = 11/21.
    assert result["cpm"] == pytest.approx(11 / 21)


def test_a_tie_between_a_hit_and_a_false_positive_interpolates_linearly():
    # One scan: FP 0.9, then a lesion hit and an FP both at 0.5. Points (0, 0),
    # (1, 0), (2, 1): at 1.5 FP/scan LUNA16's np.interp reads 0.5.
    match = detection.match_candidates(
        points=[[0, 0], [9, 9], [20, 20]],
        scores=[0.9, 0.5, 0.5],
        centres=[[9, 9]],
        radii=[1.0],
    )
    fps, sensitivity, _ = detection.froc_curve([match])
    got = detection.froc_sensitivities(fps, sensitivity, [0.5, 1.0, 1.5, 2.0, 8.0])
    np.testing.assert_allclose(got, [0, 0, 0.5, 1, 1])
    # CPM: 0 at 1/8 .. 1, 1 at 2, 4, 8: 3/7.
    assert detection.froc([match])["cpm"] == pytest.approx(3 / 7)


def test_one_candidate_inside_two_lesions_detects_both():
    # Lesions A (0, 0) and B (6, 0), radius 5; the candidate at (3, 0) is 3 from
    # each: LUNA16 counts it for both, and it is no false positive. The 0.4 at
    # (-2, 0) hits A only and is ignored there (A keeps the higher 0.7).
    match = detection.match_candidates(
        points=[[3, 0], [-2, 0]],
        scores=[0.7, 0.4],
        centres=[[0, 0], [6, 0]],
        radii=[5.0, 5.0],
    )
    np.testing.assert_allclose(match.lesion_scores, [0.7, 0.7])
    assert match.false_positive_scores.size == 0
    assert detection.froc([match])["cpm"] == pytest.approx(1.0)


def test_radius_is_strict_and_instance_maps_spacing_and_exclusions_count():
    # Distance exactly the radius is a miss (LUNA16's dist < r); the 0.5 is FP.
    match = detection.match_candidates([[3, 0]], [0.5], [[0, 0]], [3.0])
    assert np.isneginf(match.lesion_scores[0]) and match.false_positive_scores == [0.5]
    # Instance map: lesion 1 covers rows 2..6 of column 2; a candidate at
    # (5.2, 2.4) rounds onto it, 3.2 from its centre (radius 1): a hit. Lesion 2
    # is excluded: its candidate 0.8 is neither a hit nor a false positive.
    instances = np.zeros((8, 8), np.uint8)
    instances[2:7, 2] = 1
    instances[0, 6:8] = 2
    match = detection.match_candidates(
        points=[[5.2, 2.4], [0, 7], [7, 7]],
        scores=[0.6, 0.8, 0.1],
        centres=[[2, 2], [0, 6.5]],
        radii=[1.0, 1.0],
        instance_map=instances,
        excluded=[False, True],
    )
    np.testing.assert_allclose(match.lesion_scores, [0.6, -np.inf])
    np.testing.assert_allclose(match.false_positive_scores, [0.1])
    _, sensitivity, _ = detection.froc_curve([match])
    assert sensitivity[-1] == 1.0  # the excluded lesion does not count
    # Spacing (2.5, 1, 1) mm: 1.9 voxels deep is 4.75 mm (< 5: hit), 2.1 is 5.25.
    match = detection.match_candidates(
        [[1.9, 0, 0], [2.1, 0, 0]],
        [0.9, 0.8],
        [[0, 0, 0]],
        [5.0],
        spacing=(2.5, 1.0, 1.0),
    )
    np.testing.assert_allclose(match.lesion_scores, [0.9])
    np.testing.assert_allclose(match.false_positive_scores, [0.8])


def test_sensitivity_by_size_and_the_threshold_at_a_false_positive_rate():
    matches = _two_scans()  # radii L1 3 (0.9), L2 4 (0.3), L3 2 (missed)
    by_size = detection.sensitivity_by_size(matches, [0, 2.5, 3.5, np.inf])
    np.testing.assert_array_equal(by_size["num_lesions"], [1, 1, 1])
    np.testing.assert_allclose(by_size["sensitivity"], [0, 1, 1])
    # At most 1/2 FP/scan: fps [0, 0, .5, 1, 1, 1.5] -> threshold 0.8, where L2
    # (0.3) is not yet detected.
    threshold = detection.score_threshold_at_fp_rate(matches, 0.5)
    assert threshold == 0.8
    by_size = detection.sensitivity_by_size(
        matches, [0, 2.5, 3.5, np.inf], threshold=threshold
    )
    np.testing.assert_allclose(by_size["sensitivity"], [0, 1, 0])
    assert detection.score_threshold_at_fp_rate(matches, 1.0) == 0.3


def test_bootstrap_of_identical_scans_collapses_onto_the_estimate():
    matches = _two_scans()[:1] * 4  # every resample is the same split
    result = detection.froc(matches, bootstrap=20, seed=1)
    assert result["cpm_interval"] == pytest.approx((result["cpm"], result["cpm"]))
    np.testing.assert_allclose(
        result["sensitivities_interval"], np.stack([result["sensitivities"]] * 2, 1)
    )


def _luna16_sensitivities(scans, num_scans):
    """A transcription of LUNA16's evaluateCAD loop and computeFROC (sklearn's
    roc_curve), read at the seven rates by np.interp."""
    gt, prob, exclude = [], [], []
    for points, scores, centres, radii in scans:
        remaining = set(range(len(points)))
        for centre, radius in zip(centres, radii):
            inside = [
                k for k, p in enumerate(points) if sum((p - centre) ** 2) < radius**2
            ]
            remaining -= set(inside)  # hits are no false positives, even twice
            found = [scores[k] for k in inside]
            gt.append(1.0)
            prob.append(max(found) if found else -1e9)
            exclude.append(not found)
        for k in remaining:
            gt.append(0.0)
            prob.append(scores[k])
            exclude.append(False)
    gt, prob, exclude = map(np.asarray, (gt, prob, exclude))
    fpr, tpr, _ = sklearn.metrics.roc_curve(gt[~exclude], prob[~exclude])
    detected = gt[~exclude].sum()
    fps = fpr * ((~exclude).sum() - detected) / num_scans
    sens = tpr * detected / gt.sum()
    return np.interp(detection.LUNA16_FP_RATES, fps, sens)


def test_froc_matches_a_transcription_of_luna16_on_random_scans():
    rng = np.random.default_rng(7)
    scans, matches = [], []
    for _ in range(6):
        centres = rng.uniform(0, 40, (rng.integers(1, 4), 3))
        radii = rng.uniform(2, 5, len(centres))
        near = centres[rng.integers(len(centres), size=4)] + rng.normal(0, 2.5, (4, 3))
        points = np.concatenate([near, rng.uniform(0, 40, (6, 3))])
        # Candidates near a lesion tend to score higher, as a working detector's.
        scores = np.concatenate([rng.uniform(0.3, 1, 4), rng.uniform(0, 0.8, 6)])
        scans.append((points, scores, centres, radii))
        matches.append(detection.match_candidates(points, scores, centres, radii))
    ours = detection.froc(matches)["sensitivities"]
    assert ours[0] < ours[-1] < 1  # the curve rises; some lesions are missed
    np.testing.assert_allclose(ours, _luna16_sensitivities(scans, 6), atol=1e-12)


def test_froc_agrees_with_monai_where_it_is_installed():
    monai = pytest.importorskip("monai")
    matches = _two_scans()
    # MONAI scores missed lesions 0 and skips the lowest threshold, so with
    # scores above 0 its curve is this one.
    tp = np.concatenate([np.maximum(m.lesion_scores, 0.0) for m in matches])
    fp = np.concatenate([m.false_positive_scores for m in matches])
    fps, sens = monai.metrics.compute_froc_curve_data(fp, tp, len(tp), len(matches))
    rates = (0.25, 0.5, 1, 2, 4, 8)
    ours = detection.froc(matches, fp_rates=rates)["cpm"]
    assert monai.metrics.compute_froc_score(fps, sens, rates) == pytest.approx(ours)


def test_average_precision_of_a_hand_worked_case():
    # Image 1: truths G1 rows/cols 0..9, G2 20..29. P1 = G1 (0.9, IoU 1); P2 one
    # row lower (0.8): IoU 90 / 110 with G1, already taken, so FP; P3 (0.6): G2
    # with 5 more columns, IoU 100 / 150 = 2/3. Image 2: truth G3, P4 (0.7) far.
    predicted = [
        np.asarray([[0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 34]], float),
        np.asarray([[40, 40, 49, 49]], float),
    ]
    scores = [np.asarray([0.9, 0.8, 0.6]), np.asarray([0.7])]
    truth = [
        np.asarray([[0, 0, 9, 9], [20, 20, 29, 29]], float),
        np.asarray([[5, 5, 14, 14]], float),
    ]
    result = detection.box_average_precision(predicted, scores, truth)
    # IoU <= 0.65: by score T F F T, recall 1/3 1/3 1/3 2/3, precision 1 1/2
    # 1/3 1/2, envelope 1 1/2 1/2 1/2. Recall points 0..0.33 (34) read 1,
    # 0.34..0.66 (33) read 1/2, 0.67..1 read 0: (34 + 16.5) / 101 = 0.5.
    # IoU >= 0.7: P3 is FP too, recall stops at 1/3: 34 / 101.
    expected = [0.5] * 4 + [34 / 101] * 6
    np.testing.assert_allclose(result["ap"][0], expected)
    assert result["ap50"] == pytest.approx(0.5)
    # Mean: (4 * 0.5 + 6 * 34/101) / 10 = 406 / 1010.
    assert result["map"] == pytest.approx(406 / 1010)


def test_average_precision_per_class_leaves_out_classes_without_truth():
    # Class 0 found exactly; class 1 has a truth and no detection (AP 0); class 2
    # has only a detection, on class 0's box (AP NaN, left out of the means).
    result = detection.box_average_precision(
        [np.asarray([[0, 0, 4, 4], [0, 0, 4, 4]], float)],
        [np.asarray([0.9, 0.95])],
        [np.asarray([[0, 0, 4, 4], [10, 10, 12, 12]], float)],
        predicted_labels=[np.asarray([0, 2])],
        truth_labels=[np.asarray([0, 1])],
        num_classes=3,
    )
    np.testing.assert_allclose(result["ap"][0], 1.0)
    np.testing.assert_allclose(result["ap"][1], 0.0)
    assert np.isnan(result["ap"][2]).all()
    assert result["map"] == pytest.approx(0.5) and result["ap50"] == pytest.approx(0.5)


def test_numpy_box_iou_equals_the_ops_one():
    import jax.numpy as jnp

    from medjax.ops import boxes

    rng = np.random.default_rng(8)
    low = rng.uniform(0, 10, (6, 3))
    a = np.concatenate([low, low + rng.uniform(0, 6, (6, 3))], 1)
    np.testing.assert_allclose(
        detection._box_iou(a, a[::-1]),
        boxes.iou(jnp.asarray(a, jnp.float32), jnp.asarray(a[::-1], jnp.float32)),
        atol=1e-5,
    )


def test_average_precision_agrees_with_pycocotools_where_it_is_installed():
    import contextlib
    import io

    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(9)
    predicted, scores, truth, predicted_labels, truth_labels = [], [], [], [], []
    images, truths, detections = [], [], []
    for image in range(8):
        low = rng.uniform(0, 50, (rng.integers(0, 5), 2))
        boxes = np.concatenate([low, low + rng.uniform(3, 15, low.shape)], 1).round()
        # Guesses near the truth, or two stray boxes in an image without any.
        stray = np.asarray([[10.0, 10.0, 20.0, 20.0]] * 2)
        source = boxes[rng.integers(0, len(boxes), 6)] if len(boxes) else stray
        guess = source + rng.normal(0, 2, (len(source), 4))
        guess[:, 2:] = np.maximum(guess[:, 2:], guess[:, :2])
        guess_labels, box_labels = (
            rng.integers(0, 2, len(guess)),
            rng.integers(0, 2, len(boxes)),
        )
        predicted.append(guess), scores.append(rng.random(len(guess)))
        truth.append(boxes), predicted_labels.append(guess_labels)
        truth_labels.append(box_labels)
        images.append({"id": image})

        def xywh(b):  # COCO's [x, y, w, h] of an inclusive (row, col) box
            return [b[1], b[0], b[3] - b[1] + 1, b[2] - b[0] + 1]

        for b, label in zip(boxes, box_labels):
            w, h = xywh(b)[2:]
            truths.append(
                {
                    "id": len(truths) + 1,
                    "image_id": image,
                    "iscrowd": 0,
                    "category_id": int(label) + 1,
                    "bbox": xywh(b),
                    "area": w * h,
                }
            )
        for b, s, label in zip(guess, scores[-1], guess_labels):
            detections.append(
                {
                    "image_id": image,
                    "category_id": int(label) + 1,
                    "bbox": xywh(b),
                    "score": float(s),
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": truths,
        "categories": [{"id": 1}, {"id": 2}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.params.maxDets = [100]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, 0]  # [T, 101, classes]
    theirs = np.where(precision > -1, precision, np.nan).mean(1).T
    ours = detection.box_average_precision(
        predicted,
        scores,
        truth,
        predicted_labels=predicted_labels,
        truth_labels=truth_labels,
        num_classes=2,
    )
    assert np.nanmax(theirs) > 0.1
    np.testing.assert_allclose(ours["ap"], theirs, atol=1e-12)
