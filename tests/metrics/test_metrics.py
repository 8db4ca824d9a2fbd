import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from sklearn.metrics import roc_auc_score

from medjax import losses, metrics


def test_auroc_hand_computed():
    # pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, *) ok -> 3/4
    assert metrics.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 301)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes ties
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_undefined_for_one_class():
    assert np.isnan(metrics.auroc(np.array([0.2, 0.9]), np.array([1, 1])))


def test_one_vs_rest_auroc_matches_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert metrics.auroc_one_vs_rest(probabilities, labels) == pytest.approx(expected)


def test_sensitivity_specificity_hand_computed():
    predicted = np.array([1, 1, 0, 0, 1, 0])
    labels = np.array([1, 0, 1, 0, 1, 0])
    # positives 3, found 2; negatives 3, 2 called negative
    assert metrics.sensitivity_specificity(predicted, labels) == pytest.approx((2 / 3, 2 / 3))


def test_masked_accuracy():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    labels = jnp.array([0, 0, 1])
    valid = jnp.array([True, True, False])
    np.testing.assert_array_equal(metrics.accuracy(logits, labels, mask=valid), [1, 0, 0])


def test_cross_entropy_hand_computed_and_masked():
    logits = jnp.array([[0.0, np.log(3.0)], [0.0, 0.0]])
    labels = jnp.array([1, 0])
    per_example = losses.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(per_example, [-np.log(0.75), np.log(2.0)], rtol=1e-6)
    masked = losses.softmax_cross_entropy(logits, labels, mask=jnp.array([True, False]))
    np.testing.assert_allclose(masked, [-np.log(0.75), 0.0], rtol=1e-6)
    assert losses.masked_mean(masked, jnp.array([True, False])) == pytest.approx(-np.log(0.75))


def test_label_smoothing_hand_computed():
    logits = jnp.array([[0.0, 0.0]])
    # uniform prediction: cross-entropy is log 2 whatever the (smoothed) target
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, jnp.array([1]), label_smoothing=0.2), [np.log(2.0)],
        rtol=1e-6,
    )
    logits = jnp.array([[0.0, np.log(3.0)]])  # p = (1/4, 3/4); target (0.1, 0.9)
    expected = -(0.1 * np.log(0.25) + 0.9 * np.log(0.75))
    np.testing.assert_allclose(
        losses.softmax_cross_entropy(logits, jnp.array([1]), label_smoothing=0.2), [expected],
        rtol=1e-6,
    )


# ---------------------------------------------------------------- segmentation overlap


def numpy_overlap(predicted, labels, num_classes, kind):
    out = np.full((predicted.shape[0], num_classes), np.nan)
    for b in range(predicted.shape[0]):
        for c in range(num_classes):
            p, g = predicted[b] == c, labels[b] == c
            if g.sum() == 0:
                continue
            inter = np.sum(p & g)
            out[b, c] = 2 * inter / (p.sum() + g.sum()) if kind == "dice" else (
                inter / np.sum(p | g)
            )
    return out


def test_dice_and_iou_hand_computed_with_empty_truth():
    predicted = jnp.array([[[1, 1, 0], [0, 2, 0]]])  # 2x3, C = 3
    labels = jnp.array([[[1, 0, 0], [0, 0, 0]]])
    # class 0: P 3 voxels, G 5, overlap 3 -> dice 6/8, IoU 3/5
    # class 1: P 2, G 1, overlap 1 -> dice 2/3, IoU 1/2
    # class 2: truth empty -> NaN though one voxel was predicted
    np.testing.assert_allclose(
        metrics.dice_per_class(predicted, labels, 3), [[0.75, 2 / 3, np.nan]], rtol=1e-6
    )
    np.testing.assert_allclose(
        metrics.iou_per_class(predicted, labels, 3), [[0.6, 0.5, np.nan]], rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(3, 5, 7), (3, 3, 5, 7)])
def test_dice_and_iou_match_numpy_reference(shape):
    rng = np.random.default_rng(len(shape))
    labels = rng.integers(0, 3, shape)  # class 3 never in the truth
    labels[1][labels[1] == 2] = 0  # class 2 absent from example 1
    predicted = np.where(rng.random(shape) < 0.7, labels, rng.integers(0, 4, shape))
    for kind, fn in (("dice", metrics.dice_per_class), ("iou", metrics.iou_per_class)):
        jitted = jax.jit(fn, static_argnums=2)
        got = jitted(jnp.asarray(predicted), jnp.asarray(labels), 4)
        expected = numpy_overlap(predicted, labels, 4, kind)
        assert got.shape == (3, 4)
        assert np.isnan(expected[1, 2]) and np.isnan(expected[:, 3]).all()
        np.testing.assert_allclose(got, expected, rtol=1e-6)  # NaNs in the same places


def test_overlap_mask_zeroes_padded_rows_and_nanmean_reduces():
    predicted = jnp.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    labels = jnp.array([[0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    valid = jnp.array([True, True, False])
    dice = metrics.dice_per_class(predicted, labels, 2, mask=valid)
    # ex 0: class 0 P{0,3} G{0,2,3} -> 4/5; class 1 P{1,2} G{1} -> 2/3
    # ex 1: class 0 P{} G{2,3} -> 0; class 1 P all G{0,1} -> 4/6
    expected = [[0.8, 2 / 3], [0.0, 2 / 3], [0.0, 0.0]]
    np.testing.assert_allclose(dice, expected, rtol=1e-6)
    class_means = metrics.masked_nanmean(dice, valid)
    np.testing.assert_allclose(class_means, [0.4, 2 / 3], rtol=1e-6)
    with_nan = jnp.array([[0.5, np.nan], [0.3, np.nan], [9.0, 9.0]])
    np.testing.assert_allclose(
        metrics.masked_nanmean(with_nan, valid), [0.4, np.nan], rtol=1e-6
    )


# ---------------------------------------------------------------- surface distances


def brute_force_surface(mask):
    """Foreground voxels with a face neighbour outside the mask (or the array)."""
    padded = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    inner = mask.copy()
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[core]
    return np.argwhere(mask & ~inner)


def brute_force_distances(predicted, truth, spacing):
    sp = np.asarray(spacing, float)
    a = brute_force_surface(predicted) * sp
    b = brute_force_surface(truth) * sp
    pairwise = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return pairwise.min(1), pairwise.min(0)


def random_blob(shape, rng):
    noise = scipy.ndimage.gaussian_filter(rng.normal(size=shape), 1.2)
    return noise > 0.1 * noise.std()


@pytest.mark.parametrize(
    "shape,spacing",
    [((13, 17), (0.7, 1.3)), ((7, 9, 11), (2.0, 0.8, 1.1)), ((9, 10, 6), None)],
)
def test_surface_metrics_match_brute_force(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        predicted, truth = random_blob(shape, rng), random_blob(shape, rng)
        assert predicted.any() and truth.any() and (predicted != truth).any()
        to_truth, to_pred = brute_force_distances(
            predicted, truth, spacing or (1.0,) * len(shape)
        )
        got_to_truth, got_to_pred = metrics.surface_distances(predicted, truth, spacing)
        np.testing.assert_allclose(np.sort(got_to_truth), np.sort(to_truth), rtol=1e-9)
        np.testing.assert_allclose(np.sort(got_to_pred), np.sort(to_pred), rtol=1e-9)
        hd95 = max(np.percentile(to_truth, 95), np.percentile(to_pred, 95))
        got_hd95 = metrics.hausdorff_distance_95(predicted, truth, spacing)
        assert got_hd95 == pytest.approx(hd95, rel=1e-9)
        # MONAI's symmetric ASD: the mean of all distances, not of the two means
        assd = np.concatenate([to_truth, to_pred]).mean()
        assert metrics.average_surface_distance(predicted, truth, spacing) == (
            pytest.approx(assd, rel=1e-9)
        )
        assert metrics.average_surface_distance(
            predicted, truth, spacing, symmetric=False
        ) == pytest.approx(to_truth.mean(), rel=1e-9)


def test_surface_distances_hand_computed():
    predicted = np.zeros((6, 7), bool)
    truth = np.zeros((6, 7), bool)
    predicted[1, 1], truth[4, 5] = True, True  # 3 rows and 4 columns apart
    # with spacing (2, 1): sqrt(6^2 + 4^2)
    assert metrics.hausdorff_distance_95(predicted, truth, (2.0, 1.0)) == pytest.approx(
        np.sqrt(52.0)
    )
    got_asd = metrics.average_surface_distance(predicted, truth, 2.0)
    assert got_asd == pytest.approx(10.0)  # isotropic 2: 2 * sqrt(3^2 + 4^2)
    # a full 3x3 image: the border voxels are surface (outside counts as background)
    full = np.ones((3, 3), bool)
    to_truth, to_pred = metrics.surface_distances(full, full)
    assert to_truth.shape == (8,) and not to_truth.any() and not to_pred.any()
    # 4x4 square against the same square moved one column. Its 12-voxel ring: the
    # 3 + 3 top and bottom voxels over the other square's top and bottom rows are at
    # 0, the two corners and the four side voxels at 1 (both directions alike).
    a = np.zeros((7, 8), bool)
    b = np.zeros((7, 8), bool)
    a[1:5, 1:5], b[1:5, 2:6] = True, True
    to_b, to_a = metrics.surface_distances(a, b)
    assert sorted(to_b) == sorted(to_a) == [0.0] * 6 + [1.0] * 6
    assert metrics.hausdorff_distance_95(a, b) == pytest.approx(1.0)
    assert metrics.average_surface_distance(a, b) == pytest.approx(0.5)


def test_surface_metrics_empty_conventions():
    empty = np.zeros((5, 6, 7), bool)
    blob = empty.copy()
    blob[1:4, 2:5, 2:6] = True
    for fn in (
        metrics.hausdorff_distance_95,
        metrics.average_surface_distance,
        lambda p, t: metrics.average_surface_distance(p, t, symmetric=False),
    ):
        assert np.isnan(fn(empty, empty))  # both empty: undefined
        assert fn(empty, blob) == np.inf  # prediction empty, truth not
        assert fn(blob, empty) == np.inf  # truth empty, prediction not
        assert fn(blob, blob) == 0.0
    to_truth, to_pred = metrics.surface_distances(blob, empty)
    assert to_pred.size == 0 and to_truth.size > 0 and np.all(np.isinf(to_truth))
    with pytest.raises(ValueError, match="spacing"):
        metrics.hausdorff_distance_95(blob, blob, spacing=(1.0, 2.0))


# ---------------------------------------------------------------- lesion detection


def test_lesion_detection_hand_built():
    truth = np.zeros((8, 9), bool)
    truth[1:3, 1:3] = True  # lesion 1, found
    truth[5:7, 6:8] = True  # lesion 2, missed
    predicted = np.zeros((8, 9), bool)
    predicted[2:4, 2:4] = True  # overlaps lesion 1 by one voxel
    predicted[6, 1] = True  # false positive
    counts = metrics.lesion_detection_counts(predicted, truth)
    assert counts == {
        "true_positives": 1, "false_positives": 1, "false_negatives": 1,
        "num_truth": 2, "num_predicted": 2,
    }
    assert metrics.lesion_detection([counts]) == {
        "lesion_sensitivity": 0.5, "lesion_precision": 0.5
    }


def test_lesion_detection_connectivity_instances_and_pooling():
    # diagonal neighbours are one component under full connectivity
    predicted = np.zeros((3, 6, 6), bool)
    predicted[0, 0, 0] = predicted[1, 1, 1] = predicted[2, 2, 2] = True
    truth = np.zeros((3, 6, 6), bool)
    truth[2, 2, 2] = True
    truth[0, 5, 5] = True
    first = metrics.lesion_detection_counts(predicted, truth)
    assert (first["num_predicted"], first["true_positives"]) == (1, 1)
    assert (first["num_truth"], first["false_negatives"]) == (2, 1)

    # instance ids: id 1 is two separate pieces (one lesion), ids 2 and 3 touch
    # (two lesions); connected components would give 3 and 2 lesions instead
    instances = np.zeros((6, 6), np.int32)
    instances[0, 0], instances[0, 5] = 1, 1
    instances[3, 1:3], instances[3, 3:5] = 2, 3
    predicted = np.zeros((6, 6), bool)
    predicted[0, 4:6] = True  # hits instance 1
    predicted[3:5, 4] = True  # hits instance 3
    predicted[5, 0] = True  # false positive
    second = metrics.lesion_detection_counts(predicted, instances, truth_instances=True)
    assert second == {
        "true_positives": 2, "false_positives": 1, "false_negatives": 1,
        "num_truth": 3, "num_predicted": 3,
    }
    # an integer map with several ids is read as instances by default...
    assert metrics.lesion_detection_counts(predicted, instances) == second
    # ...a bool mask, a 0/255 mask or truth_instances=False give components
    as_binary = metrics.lesion_detection_counts(predicted, instances > 0)
    assert as_binary["num_truth"] == 3 and as_binary["false_negatives"] == 1
    assert metrics.lesion_detection_counts(
        predicted, 255 * (instances > 0).astype(np.uint8)
    ) == as_binary
    assert metrics.lesion_detection_counts(
        predicted, instances, truth_instances=False
    ) == as_binary

    pooled = metrics.lesion_detection([first, second])
    # detected (1 + 2) / (2 + 3); TP predicted (1 + 2) / (1 + 3)
    assert pooled["lesion_sensitivity"] == pytest.approx(3 / 5)
    assert pooled["lesion_precision"] == pytest.approx(3 / 4)

    nothing = metrics.lesion_detection_counts(np.zeros((4, 4)), np.zeros((4, 4)))
    assert all(v == 0 for v in nothing.values())
    undefined = metrics.lesion_detection([nothing])
    assert np.isnan(undefined["lesion_sensitivity"])
    assert np.isnan(undefined["lesion_precision"])
