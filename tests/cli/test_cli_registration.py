"""Learned registration end to end: medjax-train task=registration with each
registration model on tiny phantoms (4 forced CPU devices), and medjax-eval."""

import json
import os

import pytest

from tests.cli.test_cli import medjax, records

pytestmark = pytest.mark.slow  # every test here runs the programs

TINY = ["data=phantoms_tiny", "trainer=smoke", "optim=adam"]


@pytest.mark.parametrize(
    "task, model",
    [
        ("registration", "voxelmorph_tiny"),
        ("registration", "voxelmorph_diff_tiny"),
        ("registration", "affine_net_tiny"),
        ("registration_ctmr", "voxelmorph_diff_tiny"),
    ],
)
def test_train_and_evaluate(task, model, data_dir, tmp_path):
    result = medjax(
        "medjax-train",
        f"task={task}",
        f"model={model}",
        *TINY,
        "hydra.run.dir=run",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 4 device(s)" in result.stderr + result.stdout
    run_dir = os.path.join(tmp_path, "run")
    validation = [r for r in records(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4]
    for record in validation:
        assert {
            "dice",
            "tre",
            "folding",
            "sd_log_jacobian",
            "hd95",
            "dice_liver",
            "initial_dice",
            "initial_tre",
            "similarity",
            "smoothness",
        } <= set(record)
        assert 0.0 <= record["dice"] <= 1.0 and record["tre"] > 0
        assert 0.0 <= record["folding"] <= 100.0
    # the same evaluation pairs at both evaluations
    assert validation[0]["initial_dice"] == validation[1]["initial_dice"]
    assert validation[0]["initial_tre"] == validation[1]["initial_tre"]
    for step in (2, 4):
        assert os.path.isfile(
            os.path.join(run_dir, "figures", f"validation_step_{step:06d}.png")
        )
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["best_metric"] == "dice"
    result = medjax(
        "medjax-eval", f"run_dir={run_dir}", data_dir=data_dir, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "eval.json")) as f:
        metrics = json.load(f)["metrics"]
    assert metrics["num_examples"] == 12 and 0.0 <= metrics["dice"] <= 1.0
