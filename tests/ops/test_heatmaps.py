"""Gaussian heatmaps, their sub-voxel decoding and max-pool peak finding."""

import numpy as np
import pytest

from medjax.ops import heatmaps


def test_gaussian_heatmaps_match_the_formula_and_zero_invalid_points():
    points = np.array([[2.3, 4.6], [1.0, 1.0]], np.float32)
    maps = np.asarray(heatmaps.gaussian_heatmaps(points, (5, 7), 1.5, valid=np.array([True, False])))
    assert maps.shape == (5, 7, 2)
    i, j = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    expected = np.exp(-((i - 2.3) ** 2 + (j - 4.6) ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(maps[..., 0], expected, rtol=1e-5, atol=1e-7)
    assert not maps[..., 1].any()


def test_per_point_and_per_axis_sigmas():
    points = np.array([[3.0, 3.0], [3.0, 3.0]], np.float32)
    per_point = np.asarray(heatmaps.gaussian_heatmaps(points, (7, 7), np.array([1.0, 2.0])))
    assert per_point[3, 5, 0] == pytest.approx(np.exp(-2.0), rel=1e-5)
    assert per_point[3, 5, 1] == pytest.approx(np.exp(-0.5), rel=1e-5)
    per_axis = np.asarray(heatmaps.gaussian_heatmaps(points, (7, 7), np.array([[1.0, 2.0]] * 2)))
    assert per_axis[5, 3, 0] == pytest.approx(np.exp(-2.0), rel=1e-5)
    assert per_axis[3, 5, 0] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_peak_map_is_the_maximum_of_the_gaussians():
    points = np.array([[2.0, 2.0], [6.0, 5.0]], np.float32)
    peak = np.asarray(heatmaps.gaussian_peak_map(points, (9, 8), 1.0))
    maps = np.asarray(heatmaps.gaussian_heatmaps(points, (9, 8), 1.0))
    np.testing.assert_allclose(peak, maps.max(-1))
    assert peak[2, 2] == pytest.approx(1.0) and peak[6, 5] == pytest.approx(1.0)
    none = heatmaps.gaussian_peak_map(points, (9, 8), 1.0, valid=np.zeros(2, bool))
    assert not np.asarray(none).any()


@pytest.mark.parametrize("shape", [(31, 29), (15, 17, 13)])
def test_argmax_refined_recovers_subvoxel_centres_of_gaussians(shape):
    rng = np.random.default_rng(0)
    ndim = len(shape)
    points = rng.uniform(3, np.array(shape) - 4, size=(6, ndim)).astype(np.float32)
    maps = heatmaps.gaussian_heatmaps(points, shape, 2.0)
    found, peaks = heatmaps.argmax_refined(maps)
    # The bar is 0.05 voxel; the log-domain fit is exact for a Gaussian.
    np.testing.assert_allclose(np.asarray(found), points, atol=1e-3)
    assert np.all(np.asarray(peaks) > 0.85)
    # On the values themselves the classic quadratic fit is biased but sub-voxel.
    found_linear, _ = heatmaps.argmax_refined(maps, log_domain=False)
    error = np.abs(np.asarray(found_linear) - points)
    assert error.max() < 0.25 and error.max() > 1e-3


def test_argmax_refined_keeps_the_voxel_at_an_edge_or_a_flat_map():
    maps = np.zeros((5, 5, 2), np.float32)
    maps[0, 2, 0] = 1.0  # at the edge: no neighbour above axis 0
    maps[..., 1] = 0.5  # flat: argmax is voxel 0
    found, peaks = heatmaps.argmax_refined(maps)
    np.testing.assert_allclose(np.asarray(found), [[0.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(peaks), [1.0, 0.5])


def test_soft_argmax_is_the_softmax_expectation():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(6, 5, 3)).astype(np.float32)
    found = np.asarray(heatmaps.soft_argmax(maps, 2.0))
    i, j = np.meshgrid(np.arange(6), np.arange(5), indexing="ij")
    for n in range(3):
        w = np.exp(2.0 * maps[..., n])
        w /= w.sum()
        np.testing.assert_allclose(found[n], [(w * i).sum(), (w * j).sum()], rtol=1e-5)
    # Logits that are a Gaussian's log make the softmax that Gaussian: its mean.
    point = np.array([[9.4, 10.7]], np.float32)
    gaussian = heatmaps.gaussian_heatmaps(point, (21, 23), 1.2)
    logits = np.log(np.maximum(np.asarray(gaussian), 1e-30))
    np.testing.assert_allclose(np.asarray(heatmaps.soft_argmax(logits))[0], point[0], atol=1e-3)


def test_local_peaks_finds_the_maxima_by_score_against_a_brute_force_reference():
    rng = np.random.default_rng(2)
    heatmap = rng.uniform(size=(9, 11)).astype(np.float32)
    indices, scores, valid = (np.asarray(a) for a in heatmaps.local_peaks(heatmap, 40))
    padded = np.pad(heatmap, 1, constant_values=-np.inf)
    reference = [
        (heatmap[i, j], i, j)
        for i in range(9) for j in range(11)
        if heatmap[i, j] >= padded[i:i + 3, j:j + 3].max()
    ]
    reference.sort(reverse=True)
    count = len(reference)
    assert 0 < count < 40 and valid.sum() == count
    np.testing.assert_array_equal(indices[:count], [[i, j] for _, i, j in reference])
    np.testing.assert_allclose(scores[:count], [s for s, _, _ in reference])
    assert np.all(np.isfinite(scores))


def test_local_peaks_threshold_and_3d():
    heatmap = np.zeros((7, 7, 7), np.float32)
    heatmap[1, 2, 3], heatmap[5, 5, 5], heatmap[5, 4, 5] = 0.9, 0.4, 0.3
    indices, scores, valid = (np.asarray(a) for a in heatmaps.local_peaks(heatmap, 3, threshold=0.35))
    np.testing.assert_array_equal(indices[:2], [[1, 2, 3], [5, 5, 5]])
    np.testing.assert_allclose(scores[:2], [0.9, 0.4])
    np.testing.assert_array_equal(valid, [True, True, False])
    with pytest.raises(ValueError, match="odd"):
        heatmaps.local_peaks(heatmap, 3, window=2)
