"""Segmentation figures: the slice a volume is shown at, and the PNG."""

import numpy as np
from PIL import Image

from medjax.viz import segmentation


def test_the_slice_shown_is_the_middle_one_of_those_with_most_classes():
    truth = np.zeros((4, 4, 7), np.int32)
    truth[1, 1, 2:5] = 1  # slices 2, 3, 4 show two classes
    truth[2, 2, 6] = 2  # slice 6 shows two as well
    assert segmentation._most_foreground_slice(truth) == 4  # of 2, 3, 4, 6
    truth[3, 3, 3] = 2  # now slice 3 alone shows three
    assert segmentation._most_foreground_slice(truth) == 3


def test_draw_segmentations_writes_a_png(tmp_path):
    truth = np.zeros((2, 12, 11), np.int32)
    truth[:, 3:8, 2:7] = 1
    prediction = np.roll(truth, 1, axis=1)
    images = truth.astype(np.float32) + 0.1
    path = tmp_path / "figures" / "cases.png"
    segmentation.draw_segmentations(
        images, truth, prediction, str(path), dice=np.full((2, 2), 0.8), title="t"
    )
    picture = np.asarray(Image.open(path).convert("RGB"), int)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 80) & (picture[..., 2] < 80)
    assert red.sum() > 20  # the truth's contours are drawn in red
