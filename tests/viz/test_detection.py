"""FROC figure: a PNG of the curves, systems without lesions left out."""

import numpy as np
from PIL import Image

from medjax.metrics import detection
from medjax.viz.detection import plot_froc


def test_plot_froc_writes_a_png(tmp_path):
    match = detection.match_candidates(
        [[0, 0], [9, 9], [20, 20]], [0.9, 0.5, 0.4], [[9, 9]], [1.0]
    )
    empty = detection.match_candidates(np.zeros((1, 2)), [0.5], np.zeros((0, 2)), [])
    path = tmp_path / "figures" / "froc.png"
    plot_froc(
        {"cad": detection.froc([match]), "no lesions": detection.froc([empty])},
        str(path),
        title="phantoms",
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (480, 400)
