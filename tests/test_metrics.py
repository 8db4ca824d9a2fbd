import jax.numpy as jnp
import numpy as np
import pytest
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
