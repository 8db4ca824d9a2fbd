"""Pixel-level anomaly metrics against brute force, scikit-learn and scipy."""

import numpy as np
import pytest
import scipy.ndimage as ndi
from sklearn.metrics import average_precision_score, roc_auc_score

from medjax.metrics.anomaly import (
    best_dice,
    median_filter_maps,
    pixel_metrics,
    pooled_dice,
    remove_small_components,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_best_dice_equals_a_brute_force_threshold_sweep(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random(300) < 0.1
    scores = np.round(rng.random(300) + 0.6 * truth, 2)  # rounded: many ties
    dice, threshold = best_dice(scores, truth)
    sweep = {t: pooled_dice(scores >= t, truth) for t in np.unique(scores)}
    best = max(sweep.values())
    assert dice == pytest.approx(best)
    assert threshold == max(t for t, d in sweep.items() if d == pytest.approx(best))
    assert pooled_dice(scores >= threshold, truth) == pytest.approx(dice)


def test_best_dice_by_hand():
    # Sorted by score: 0.9 (lesion), 0.8 (healthy), 0.7 (lesion), 0.1 (healthy).
    scores = np.array([0.1, 0.7, 0.9, 0.8])
    truth = np.array([False, True, True, False])
    # t = 0.9: 2*1/(2+1) = 0.667; t = 0.8: 2/4 = 0.5; t = 0.7: 4/5 = 0.8.
    assert best_dice(scores, truth) == (pytest.approx(0.8), 0.7)
    assert np.isnan(best_dice(scores, np.zeros(4, bool))[0])


def test_pixel_auprc_and_auroc_equal_scikit_learn_inside_the_mask():
    maps = np.array([[[0.9, 0.2], [0.4, 0.4]], [[0.1, 0.8], [0.3, 5.0]]])
    truth = np.array([[[1, 0], [1, 0]], [[0, 1], [0, 0]]], bool)
    inside = np.ones_like(truth).astype(bool)
    inside[1, 1, 1] = False  # the outlier 5.0 is outside the body: not counted
    result = pixel_metrics(maps, truth, inside)
    scores, labels = maps[inside], truth[inside]
    assert result["pixel_auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    # Hand: the 3 lesions score 0.9, 0.8, 0.4 (tied with a healthy 0.4):
    # precisions 1, 1, 3/4 at recalls 1/3, 2/3, 1.
    assert result["pixel_auprc"] == pytest.approx((1 + 1 + 0.75) / 3)
    # Best Dice: t = 0.8 gives 2*2/(3+2) = 0.8; t = 0.4: 2*3/(3+4) = 0.857.
    assert result["best_dice"] == pytest.approx(6 / 7)
    assert result["best_dice_threshold"] == pytest.approx(0.4)  # float32 maps
    at = pixel_metrics(maps, truth, inside, threshold=0.8)
    assert at["dice"] == pytest.approx(0.8)


def test_small_components_are_removed_within_each_map():
    mask = np.zeros((2, 6, 6), bool)
    mask[0, 0:2, 0:2] = True  # 4 voxels
    mask[0, 4, 4] = True  # 1 voxel
    mask[1, 0:2, 0:2] = True  # the same square in the next map: not joined
    kept = remove_small_components(mask, 3)
    expected = mask.copy()
    expected[0, 4, 4] = False
    np.testing.assert_array_equal(kept, expected)
    # Diagonal neighbours are separate components (face connectivity).
    diagonal = np.zeros((1, 4, 4), bool)
    diagonal[0, 0, 0] = diagonal[0, 1, 1] = True
    assert not remove_small_components(diagonal, 2).any()


def test_median_filter_is_scipys_per_map_and_min_component_enters_best_dice():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 9, 9)).astype(np.float32)
    filtered = median_filter_maps(maps, 3)
    for i in range(3):
        np.testing.assert_array_equal(filtered[i], ndi.median_filter(maps[i], 3, mode="reflect"))
    # A lesion block scored high, plus isolated high-scoring single voxels.
    truth = np.zeros((3, 9, 9), bool)
    truth[0, 2:5, 2:5] = True
    maps = np.where(truth, 0.9, 0.1).astype(np.float32)
    maps[1, 7, 7] = maps[2, 1, 1] = 0.95
    plain = pixel_metrics(maps, truth)
    cleaned = pixel_metrics(maps, truth, min_component=2)
    assert plain["best_dice"] == pytest.approx(2 * 9 / (9 + 11))
    assert cleaned["best_dice"] == pytest.approx(1.0)
