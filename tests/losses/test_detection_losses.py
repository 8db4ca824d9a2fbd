"""CenterNet's penalty-reduced focal loss and the L1 at centres, on hand-worked
values and against a direct numpy transcription of the paper's equation."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.losses import l1_at_points, penalty_reduced_focal_loss


def test_focal_loss_hand_computed():
    # p = 0.5 everywhere; targets 1 (a centre), 0.5, 0:
    # centre: (1 - .5)^2 log .5; 0.5: (1 - .5)^4 .5^2 log .5; 0: .5^2 log .5.
    logits = jnp.zeros((1, 1, 3, 1))
    target = jnp.asarray([1.0, 0.5, 0.0]).reshape(1, 1, 3, 1)
    expected = -np.log(0.5) * (0.25 + 0.0625 * 0.25 + 0.25)
    loss = penalty_reduced_focal_loss(logits, target)
    assert float(loss[0]) == pytest.approx(expected, rel=1e-6)
    assert float(loss[0]) == pytest.approx(0.357405, rel=1e-5)


def test_focal_loss_matches_the_equation_and_masks_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 6, 1)).astype(np.float32) * 2
    target = rng.uniform(size=(3, 7, 6, 1)).astype(np.float32) ** 3
    target[0, 2, 3] = target[0, 5, 1] = target[1, 0, 0] = 1.0  # centres; none in 2
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    positive = target == 1
    terms = np.where(
        positive, (1 - p) ** 2 * np.log(p), (1 - target) ** 4 * p**2 * np.log(1 - p)
    )
    expected = -terms.sum(axis=(1, 2, 3)) / np.maximum(positive.sum(axis=(1, 2, 3)), 1)
    loss = penalty_reduced_focal_loss(jnp.asarray(logits), jnp.asarray(target))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    masked = penalty_reduced_focal_loss(
        jnp.asarray(logits), jnp.asarray(target), mask=jnp.asarray([True, False, True])
    )
    np.testing.assert_allclose(masked, expected * [1, 0, 1], rtol=1e-5)


def test_l1_at_points_averages_valid_objects_and_axes():
    predicted = jnp.asarray([[[1.0, 2.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    target = jnp.asarray([[[2.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    valid = jnp.asarray([[True, False], [False, False]])
    np.testing.assert_allclose(l1_at_points(predicted, target, valid), [1.5, 0.0])
