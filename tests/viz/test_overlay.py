"""Overlay PNGs (``medjax.viz.overlay``)."""

import numpy as np
import pytest
from PIL import Image

from medjax.data import io
from medjax.viz import overlay


def test_overlay_draws_yellow_prediction_and_red_truth(tmp_path):
    image = np.linspace(-100, 100, 20 * 30).reshape(20, 30)
    mask = np.zeros((20, 30), np.int32)
    mask[5:11, 5:16] = 1
    truth = np.zeros((20, 30), np.int32)
    truth[12:18, 18:26] = 1
    path = overlay.save_overlay_png(image, mask, tmp_path / "overlay.png", truth=truth)
    with Image.open(path) as loaded:
        assert loaded.size == (30, 20) and loaded.mode == "RGB"
        rgb = np.array(loaded)
    assert tuple(rgb[5, 5]) == (255, 255, 0)  # corner of the prediction
    assert tuple(rgb[10, 10]) == (255, 255, 0)  # bottom edge
    assert tuple(rgb[12, 20]) == (255, 0, 0)  # top edge of the truth
    inside = rgb[8, 10]
    assert inside[0] == inside[1] == inside[2]  # interior stays gray
    assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[-1, -1]) == (255, 255, 255)
    edges = overlay.mask_edges(mask)
    assert edges.sum() == 2 * 6 + 2 * 11 - 4  # the rectangle's outline
    with pytest.raises(io.ImageFormatError, match="mask shape"):
        overlay.save_overlay_png(image, mask[:5], tmp_path / "bad.png")


# --------------------------------------------------------------------------- intensity
