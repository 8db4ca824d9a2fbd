import numpy as np
import pytest

from medjax.metrics import dice_per_class
from medjax.metrics.slice_consistency import interslice_dice, slice_consistency
from medjax.tasks.segmentation import SegmentationTask

SIDE = 6  # a SIDE x SIDE square in every one of 5 slices of a 12 x 12 x 5 volume


def square_stack(shifts) -> np.ndarray:
    """A ``[12, 12, len(shifts)]`` volume: slice ``z`` holds the square at
    rows 3..8 and columns ``3 + shifts[z]`` .. ``8 + shifts[z]``."""
    volume = np.zeros((12, 12, len(shifts)), bool)
    for z, shift in enumerate(shifts):
        volume[3 : 3 + SIDE, 3 + shift : 3 + SIDE + shift, z] = True
    return volume


def test_flickering_prediction_scores_worse_than_a_smooth_one_of_equal_dice():
    truth = square_stack([0, 0, 0, 0, 0])
    smooth = square_stack([1, 1, 1, 1, 1])  # every slice one column off
    flicker = square_stack([1, -1, 1, -1, 1])  # one column off, alternating side
    # Equal voxel Dice: every slice overlaps the truth in SIDE * (SIDE - 1).
    dice = dice_per_class(np.stack([smooth, flicker]), np.stack([truth, truth]), 2)
    np.testing.assert_allclose(dice[:, 1], (SIDE - 1) / SIDE, rtol=1e-6)
    assert interslice_dice(truth) == 1.0
    assert slice_consistency(smooth, truth) == 0.0
    # Adjacent flicker slices are two columns apart: Dice (SIDE - 2) / SIDE.
    assert slice_consistency(flicker, truth) == pytest.approx(-2 / SIDE)


def test_empty_pairs_are_skipped_and_the_truths_own_ends_cancel():
    truth = square_stack([0, 0, 0, 0])
    truth[..., 0] = False  # the structure starts at slice 1
    # Pairs (0,1), (1,2), (2,3): Dice 0, 1, 1; a fully empty pair would be skipped.
    assert interslice_dice(truth) == pytest.approx(2 / 3)
    padded = np.concatenate([np.zeros_like(truth), truth], axis=-1)
    assert interslice_dice(padded) == pytest.approx(2 / 3)
    assert slice_consistency(truth, truth) == 0.0
    # The slice axis is an argument: the same stack with slices along axis 0.
    assert interslice_dice(np.moveaxis(truth, -1, 0), axis=0) == pytest.approx(2 / 3)
    assert np.isnan(slice_consistency(np.zeros_like(truth), truth))


def test_segmentation_task_adds_slice_consistency_for_volumes_only():
    task = SegmentationTask(num_classes=2, class_names=("background", "organ"))
    truth = square_stack([0, 0, 0, 0, 0]).astype(np.uint8)[None]
    flicker = square_stack([1, -1, 1, -1, 1]).astype(np.uint8)[None]
    dice = np.asarray(dice_per_class(flicker, truth, 2))
    host = {"prediction": flicker, "truth": truth, "dice": dice, "iou": dice}
    result = task.split_metrics(host)
    assert result["slice_consistency_organ"] == pytest.approx(-2 / SIDE)
    assert result["slice_consistency"] == pytest.approx(-2 / SIDE)
    flat = {k: v[..., 0] for k, v in host.items() if k in ("prediction", "truth")}
    result_2d = task.split_metrics({**host, **flat})
    assert not any(key.startswith("slice_consistency") for key in result_2d)
