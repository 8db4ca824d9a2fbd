"""Each landmark method trained for a few steps on 4 forced CPU devices (the
command line's landmark run is in tests/cli/test_cli_detection.py)."""

import os

import jax
import numpy as np
import pytest

from medjax.engine.loop import train
from medjax.engine.optim import make_optimizer
from medjax.models.cnn import cnn_tiny
from medjax.models.planes import planes_tiny
from medjax.models.unet import unet_tiny
from medjax.tasks.landmarks import (
    DirectLandmarkTask,
    HeatmapLandmarkTask,
    PlaneLandmarkTask,
)

pytestmark = pytest.mark.slow

NAMES = (
    "vertebral_body",
    "spinal_canal",
    "aorta",
    "right_kidney",
    "left_kidney",
    "spleen",
)


def _train(task, model, data, run_dir, steps=2, initialize=None):
    return train(
        task=task,
        model=model,
        tx=make_optimizer("adam", lr=1e-3, total_steps=steps),
        data=data,
        run_dir=str(run_dir),
        max_steps=steps,
        eval_every=steps,
        checkpoint_every=steps,
        best_metric="mre",
        best_mode="min",
        progress=False,
        initialize=initialize,
    )


def _check(summary, run_dir, examples):
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == examples
    assert {
        "mre",
        "mre_voxels",
        "sdr_2mm",
        "sdr_4mm",
        "false_positives",
        "missed",
        "mre_aorta",
        "mre_voxels_spleen",
    } <= set(validation)
    assert validation["mre"] > 0 and 0 <= validation["sdr_4mm"] <= 1
    assert os.path.isfile(run_dir / "figures" / "validation_step_000002.png")
    return validation


@pytest.fixture(scope="module")
def direct_run(tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("landmarks_direct") / "run"
    task = DirectLandmarkTask(landmark_names=NAMES, num_classes=18)
    return _train(task, cnn_tiny(num_classes=18), tiny_data, run_dir), run_dir


def test_2d_methods_train_on_four_devices(direct_run, tiny_data, tmp_path):
    assert jax.device_count() == 4
    summary = _train(
        HeatmapLandmarkTask(landmark_names=NAMES),
        unet_tiny(num_classes=6),
        tiny_data,
        tmp_path / "run",
    )
    for validation in (_check(summary, tmp_path / "run", 20), _check(*direct_run, 20)):
        # isotropic 12.5 mm pixels (400 mm over 32)
        assert validation["mre"] == pytest.approx(12.5 * validation["mre_voxels"])


def test_3d_planes_train_on_four_devices_from_a_2d_backbone(direct_run, tmp_path):
    from medjax.data.datasets.phantoms import phantoms
    from medjax.engine.transfer import load_pretrained

    data = phantoms(
        kind="torso3d",
        image_size=16,
        split_sizes={"train": 8, "validation": 4, "test": 4},
        data_dir=str(tmp_path / "data"),
        batch_size=4,
        eval_batch_size=4,
    )
    loaded = {}

    def initialize(state):
        variables, report = load_pretrained(
            state.variables(), str(direct_run[1]), {"backbone": "backbone"}
        )
        loaded["report"] = report.to_dict()
        loaded["stem"] = np.asarray(
            variables["params"]["backbone"]["stem_conv"]["kernel"]
        )
        return state.replace(
            params=variables["params"], batch_stats=variables.get("batch_stats", {})
        )

    summary = _train(
        PlaneLandmarkTask(landmark_names=NAMES),
        planes_tiny(num_landmarks=6),
        data,
        tmp_path / "run",
        initialize=initialize,
    )
    _check(summary, tmp_path / "run", 4)
    report = loaded["report"]
    assert report["mismatched"] == [] and report["missing"] == []
    assert any(path.endswith("backbone/stem_conv/kernel") for path in report["loaded"])
    assert loaded["stem"].shape == (3, 3, 1, 4)
