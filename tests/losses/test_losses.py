"""Segmentation losses: hand-computed values, numpy references on odd 2D/3D shapes,
masking of padded examples and the identities between the losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import losses

LOG3 = np.log(3.0)
# Two kinds of voxel in the hand-worked 2x3 image, C = 2:
# A = logits (0, log 3) -> p = (1/4, 3/4);  B = logits (0, 0) -> p = (1/2, 1/2).
A, B = [0.0, LOG3], [0.0, 0.0]
HAND_LOGITS = jnp.array([[[A, A, B], [B, A, B]]])  # [1, 2, 3, 2]
HAND_LABELS = jnp.array([[[1, 1, 0], [0, 0, 0]]])  # [1, 2, 3]
# Class 1: p1 = [[.75, .75, .5], [.5, .75, .5]], sum p1 = 3.75, |g1| = 2,
#   sum p1 g1 = 1.5, so FP = 3.75 - 1.5 = 2.25 and FN = 2 - 1.5 = 0.5.
# Class 0: p0 = [[.25, .25, .5], [.5, .25, .5]], sum p0 = 2.25, |g0| = 4,
#   sum p0 g0 = .5 + .5 + .25 + .5 = 1.75.
DICE1 = 2 * 1.5 / (3.75 + 2)  # 0.5217...
DICE0 = 2 * 1.75 / (2.25 + 4)  # 0.56
# Per-voxel CE: label 1 at A: -log(3/4) (x2); label 0 at A: -log(1/4) (x1);
# label 0 at B: log 2 (x3).
CE_A1, CE_A0, CE_B = -np.log(0.75), -np.log(0.25), np.log(2.0)


def numpy_softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_reference(logits, labels, kind, *, weights=None, gamma=2.0, alpha=0.5,
                    beta=0.5, smooth=1e-5, include_background=False):
    """Plain numpy loss per example, written out loop by loop."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    num_classes = logits.shape[-1]
    w = np.ones(num_classes) if weights is None else np.asarray(weights, np.float64)
    out = []
    for b in range(logits.shape[0]):
        p = numpy_softmax(logits[b]).reshape(-1, num_classes)
        y = labels[b].reshape(-1)
        if kind in ("ce", "focal"):
            p_y = p[np.arange(len(y)), y]
            per_voxel = -np.log(p_y)
            if kind == "focal":
                per_voxel = (1 - p_y) ** gamma * per_voxel
            out.append(np.sum(w[y] * per_voxel) / np.sum(w[y]))
        else:
            g = np.eye(num_classes)[y]
            classes = range(0 if include_background else 1, num_classes)
            scores = []
            for c in classes:
                tp = np.sum(p[:, c] * g[:, c])
                fp = np.sum(p[:, c] * (1 - g[:, c]))
                fn = np.sum((1 - p[:, c]) * g[:, c])
                if kind == "dice":
                    scores.append((2 * tp + smooth) / (2 * tp + fp + fn + smooth))
                else:
                    denominator = tp + alpha * fp + beta * fn + smooth
                    scores.append((tp + smooth) / denominator)
            wc = w[list(classes)]
            out.append(1 - np.sum(wc * np.array(scores)) / np.sum(wc))
    return np.array(out)


def random_case(shape, num_classes, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (num_classes,)) * 2.0
    labels = rng.integers(0, num_classes, size=shape)
    return jnp.asarray(logits, jnp.float32), jnp.asarray(labels)


# ------------------------------------------------------------------ hand-computed


def test_dense_cross_entropy_hand_computed():
    expected = (2 * CE_A1 + CE_A0 + 3 * CE_B) / 6
    np.testing.assert_allclose(
        losses.dense_cross_entropy(HAND_LOGITS, HAND_LABELS), [expected], rtol=1e-6
    )


def test_dense_cross_entropy_class_weights_hand_computed():
    # w = (1, 3): the two class-1 voxels weigh 3, the four class-0 voxels 1.
    expected = (3 * 2 * CE_A1 + CE_A0 + 3 * CE_B) / (3 * 2 + 4)
    got = losses.dense_cross_entropy(
        HAND_LOGITS, HAND_LABELS, class_weights=jnp.array([1.0, 3.0])
    )
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    # ...which is not the unweighted mean: the weights do something.
    assert abs(expected - (2 * CE_A1 + CE_A0 + 3 * CE_B) / 6) > 0.05


def test_soft_dice_hand_computed():
    s = 1e-5
    dice1 = (2 * 1.5 + s) / (3.75 + 2 + s)
    dice0 = (2 * 1.75 + s) / (2.25 + 4 + s)
    np.testing.assert_allclose(
        losses.soft_dice_loss(HAND_LOGITS, HAND_LABELS), [1 - dice1], rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.soft_dice_loss(HAND_LOGITS, HAND_LABELS, include_background=True),
        [1 - (dice0 + dice1) / 2],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.soft_dice_loss(
            HAND_LOGITS, HAND_LABELS, include_background=True,
            class_weights=jnp.array([1.0, 3.0]), smooth=0.0,
        ),
        [1 - (DICE0 + 3 * DICE1) / 4],
        rtol=1e-6,
    )


def test_tversky_hand_computed():
    # alpha = 0.3 on FP = 2.25, beta = 0.7 on FN = 0.5, TP = 1.5.
    expected = 1 - 1.5 / (1.5 + 0.3 * 2.25 + 0.7 * 0.5)
    got = losses.tversky_loss(HAND_LOGITS, HAND_LABELS, smooth=0.0)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    # beta > alpha punishes the missed class-1 mass less than the extra mass here
    swapped = losses.tversky_loss(HAND_LOGITS, HAND_LABELS, alpha=0.7, beta=0.3,
                                  smooth=0.0)
    np.testing.assert_allclose(
        swapped, [1 - 1.5 / (1.5 + 0.7 * 2.25 + 0.3 * 0.5)], rtol=1e-6
    )


def test_focal_hand_computed():
    # (1 - p_y)^2: label 1 at A -> (1/4)^2; label 0 at A -> (3/4)^2; B -> (1/2)^2.
    expected = (2 * CE_A1 / 16 + CE_A0 * 9 / 16 + 3 * CE_B / 4) / 6
    np.testing.assert_allclose(
        losses.softmax_focal_loss(HAND_LOGITS, HAND_LABELS, gamma=2.0), [expected],
        rtol=1e-6,
    )
    weighted = (3 * 2 * CE_A1 / 16 + CE_A0 * 9 / 16 + 3 * CE_B / 4) / (3 * 2 + 4)
    np.testing.assert_allclose(
        losses.softmax_focal_loss(
            HAND_LOGITS, HAND_LABELS, gamma=2.0, class_weights=jnp.array([1.0, 3.0])
        ),
        [weighted],
        rtol=1e-6,
    )


def test_focal_on_classification_logits_hand_computed():
    logits = jnp.array([[0.0, LOG3], [0.0, LOG3], [0.0, 0.0]])
    labels = jnp.array([1, 0, 1])
    expected = [CE_A1 / 16, CE_A0 * 9 / 16, CE_B / 4]
    got = losses.softmax_focal_loss(logits, labels)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(
        losses.softmax_focal_loss(logits, labels, gamma=0.0),
        losses.softmax_cross_entropy(logits, labels),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="class_weights"):
        losses.softmax_focal_loss(logits, labels, class_weights=jnp.ones(2))


# ------------------------------------------------------------------ references


@pytest.mark.parametrize("shape", [(2, 5, 7), (2, 3, 5, 7)])
@pytest.mark.parametrize("kind", ["ce", "focal", "dice", "tversky"])
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_match_numpy_reference_odd_shapes(shape, kind, weighted):
    logits, labels = random_case(shape, 3, seed=len(shape) + 7 * weighted)
    weights = jnp.array([0.5, 1.0, 2.5]) if weighted else None
    if kind == "ce":
        got = losses.dense_cross_entropy(logits, labels, class_weights=weights)
    elif kind == "focal":
        got = losses.softmax_focal_loss(
            logits, labels, gamma=1.5, class_weights=weights
        )
    elif kind == "dice":
        got = losses.soft_dice_loss(logits, labels, class_weights=weights,
                                    include_background=weighted)
    else:
        got = losses.tversky_loss(logits, labels, alpha=0.2, beta=0.8,
                                  class_weights=weights, include_background=weighted)
    expected = numpy_reference(
        logits, labels, kind, weights=weights, gamma=1.5, alpha=0.2, beta=0.8,
        include_background=weighted,
    )
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, expected, rtol=2e-5)


def test_dice_ce_is_the_weighted_sum():
    logits, labels = random_case((3, 5, 7), 4, seed=3)
    w = jnp.array([0.2, 1.0, 1.0, 3.0])
    dice = numpy_reference(logits, labels, "dice", weights=w)
    ce = numpy_reference(logits, labels, "ce", weights=w)
    got = losses.dice_ce_loss(logits, labels, dice_weight=0.7, ce_weight=1.3,
                              class_weights=w)
    np.testing.assert_allclose(got, 0.7 * dice + 1.3 * ce, rtol=2e-5)


# ------------------------------------------------------------------ identities


def test_focal_at_gamma_zero_is_cross_entropy():
    logits, labels = random_case((2, 3, 5, 7), 3, seed=11)
    w = jnp.array([1.0, 2.0, 0.5])
    for weights in (None, w):
        np.testing.assert_allclose(
            losses.softmax_focal_loss(logits, labels, gamma=0.0, class_weights=weights),
            losses.dense_cross_entropy(logits, labels, class_weights=weights),
            rtol=1e-6,
        )


def test_tversky_half_half_is_soft_dice():
    logits, labels = random_case((3, 5, 7), 4, seed=5)
    np.testing.assert_allclose(
        losses.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.0),
        losses.soft_dice_loss(logits, labels, smooth=0.0),
        rtol=1e-6,
    )
    # with smoothing the Tversky form equals Dice with twice the smoothing term
    np.testing.assert_allclose(
        losses.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.1),
        losses.soft_dice_loss(logits, labels, smooth=0.2),
        rtol=1e-6,
    )


def test_dice_near_zero_for_perfect_confident_logits():
    labels = jnp.asarray(np.random.default_rng(2).integers(0, 3, (2, 5, 7)))
    logits = 30.0 * jax.nn.one_hot(labels, 3)
    for include_background in (False, True):
        got = losses.soft_dice_loss(
            logits, labels, include_background=include_background
        )
        assert np.all(np.asarray(got) < 1e-6)
    # and far from zero for the opposite prediction
    wrong = 30.0 * jax.nn.one_hot((labels + 1) % 3, 3)
    assert np.all(np.asarray(losses.soft_dice_loss(wrong, labels)) > 0.99)


# ------------------------------------------------------------------ masking


LOSS_FNS = {
    "cross_entropy": {},
    "focal": {"gamma": 2.0},
    "dice": {},
    "tversky": {},
    "dice_ce": {"class_weights": jnp.array([1.0, 2.0, 3.0])},
}


@pytest.mark.parametrize("name", sorted(LOSS_FNS))
def test_mask_zeroes_padded_examples_and_their_gradient(name):
    logits, labels = random_case((3, 5, 7), 3, seed=13)
    # the padded example holds confident garbage, which must not leak
    logits = logits.at[2].set(100.0 * jax.nn.one_hot((labels[2] + 1) % 3, 3))
    valid = jnp.array([True, True, False])
    kwargs = LOSS_FNS[name]
    full = losses.segmentation_loss(name, logits, labels, **kwargs)
    masked = losses.segmentation_loss(name, logits, labels, mask=valid, **kwargs)
    assert masked[2] == 0.0 and full[2] > 0.1
    np.testing.assert_array_equal(masked[:2], full[:2])

    def objective(x):
        per_example = losses.segmentation_loss(name, x, labels, mask=valid, **kwargs)
        return losses.masked_mean(per_example, valid)

    grad = jax.jit(jax.grad(objective))(logits)
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad[2]) == 0.0)
    assert np.abs(np.asarray(grad[:2])).sum() > 0


def test_focal_gradient_finite_where_prediction_is_certain():
    labels = jnp.array([[0, 1, 1]])
    logits = 200.0 * jax.nn.one_hot(labels, 2)  # p_y rounds to exactly 1
    for gamma in (0.0, 0.5, 2.0):
        grad = jax.grad(lambda x: losses.softmax_focal_loss(x, labels, gamma=gamma)[0])(
            logits
        )
        assert np.all(np.isfinite(grad))


# ------------------------------------------------------------------ registry, errors


def test_registry_picks_the_loss_by_name():
    logits, labels = random_case((2, 5, 7), 3, seed=17)
    assert set(losses.SEGMENTATION_LOSSES) == {
        "dice", "dice_ce", "cross_entropy", "focal", "tversky"
    }
    np.testing.assert_array_equal(
        losses.segmentation_loss("tversky", logits, labels, alpha=0.4, beta=0.6),
        losses.tversky_loss(logits, labels, alpha=0.4, beta=0.6),
    )
    np.testing.assert_array_equal(
        jax.jit(lambda x, y: losses.segmentation_loss("dice_ce", x, y))(logits, labels),
        losses.dice_ce_loss(logits, labels),
    )
    names = "cross_entropy, dice, dice_ce, focal, tversky"
    with pytest.raises(ValueError, match=names):
        losses.segmentation_loss("lovasz", logits, labels)


def test_bad_shapes_raise_one_clear_error():
    logits, labels = random_case((2, 5, 7), 3, seed=19)
    with pytest.raises(ValueError, match="labels"):
        losses.soft_dice_loss(logits, labels[:, :4])
    with pytest.raises(ValueError, match="class_weights"):
        losses.dense_cross_entropy(logits, labels, class_weights=jnp.ones(4))


def test_balanced_class_weights():
    weights = losses.balanced_class_weights([30, 10, 0, 20])
    # N / (K n_k) over the 3 present classes: 60 / (3 * n_k)
    np.testing.assert_allclose(weights, [60 / 90, 2.0, 0.0, 1.0])
