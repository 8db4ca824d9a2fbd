"""Training curves: per-class metrics share their family's panel; the PNG."""

import os

from medjax.viz import curves


def test_per_class_metrics_share_their_family_panel():
    names = [
        "loss",
        "dice",
        "dice_liver",
        "dice_aorta",
        "hd95_liver",
        "hd95",
        "lesion_sensitivity",
        "lesion_precision",
        "auroc",
        "missed_lung",
        "asd_lung",
    ]
    panels = curves._panels(sorted(names))
    assert panels["dice"] == ["dice", "dice_aorta", "dice_liver"]
    assert panels["hd95"] == ["hd95", "hd95_liver"]
    assert panels["lesion"] == ["lesion_precision", "lesion_sensitivity"]
    # a lone per-class metric keeps its own panel
    assert panels["missed_lung"] == ["missed_lung"] and panels["asd_lung"] == [
        "asd_lung"
    ]
    assert panels["loss"] == ["loss"] and panels["auroc"] == ["auroc"]


def test_plot_curves_writes_a_png(tmp_path):
    records = [
        {"step": 1, "split": "train", "loss": 1.0},
        {
            "step": 2,
            "split": "validation",
            "loss": 0.5,
            "dice": 0.5,
            "dice_liver": 0.6,
            "dice_lung": None,
            "num_examples": 3,
        },
    ]
    path = tmp_path / "figures" / "curves.png"
    curves.plot_curves(records, str(path))
    assert os.path.getsize(path) > 1000
