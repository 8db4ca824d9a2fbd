"""Reconstruction metrics: anomaly maps and scores against numpy; average
precision against scikit-learn."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from medjax import metrics


def test_anomaly_scores_against_numpy():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 6, 7)).astype(np.float32)
    body = rng.random((3, 6, 7)) > 0.4
    body[2] = False  # no body: every voxel counts
    mean = metrics.anomaly_scores(jnp.asarray(maps), jnp.asarray(body))
    q90 = metrics.anomaly_scores(jnp.asarray(maps), jnp.asarray(body), quantile=0.9)
    for i in range(2):
        assert float(mean[i]) == pytest.approx(maps[i][body[i]].mean(), rel=1e-5)
        assert float(q90[i]) == pytest.approx(np.quantile(maps[i][body[i]], 0.9), rel=1e-5)
    assert float(mean[2]) == pytest.approx(maps[2].mean(), rel=1e-5)
    assert float(metrics.anomaly_scores(jnp.asarray(maps))[0]) == pytest.approx(maps[0].mean(), rel=1e-5)


def test_anomaly_map_is_the_squared_error():
    image = jnp.zeros((1, 5, 5, 1))
    reconstruction = image.at[0, 2, 3, 0].set(2.0)
    maps = metrics.anomaly_maps(image, reconstruction)
    assert maps.shape == (1, 5, 5) and float(maps[0, 2, 3]) == 4.0 and float(maps.sum()) == 4.0
    smooth = metrics.anomaly_maps(image, reconstruction, sigma=1.0)
    assert int(jnp.argmax(smooth[0])) == 2 * 5 + 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.5 * labels, 1)  # rounded: ties
    assert metrics.average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores)
    )
    assert np.isnan(metrics.average_precision(scores, np.zeros(40)))


def test_psnr_hand_computed():
    # range 2, mse 0.04: 10 log10(4 / 0.04) = 20 dB
    np.testing.assert_allclose(metrics.psnr(jnp.array([0.04, 4.0])), [20.0, 0.0], rtol=1e-6)
