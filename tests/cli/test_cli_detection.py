"""Detection and landmarks end to end through the command line: tiny CenterNet
and landmark runs, then medjax-predict on a PNG and a NIfTI volume writes CSV,
JSON and an overlay."""

import csv
import json
import os

import numpy as np
import pytest

from medjax.data import io, preprocess
from tests.cli.test_cli import medjax, records
from tests.cli.test_cli_segmentation import _phantom_volume_hu

pytestmark = pytest.mark.slow  # every test here runs the programs

TINY = [
    "task=centernet",
    "model=centernet_tiny",
    "data=phantoms_tiny",
    "trainer=smoke",
    "optim=adam",
    "task.max_detections=8",
]


# A NIfTI affine with the axes swapped and flipped (voxel -> RAS+ mm).
AFFINE = np.array(
    [[0, -12.5, 0, 200.0], [-12.5, 0, 0, 180.0], [0, 0, 5.0, 40.0], [0, 0, 0, 1]]
)


def _predict(run_dir, data_dir, tmp_path, source, output):
    """medjax-predict of ``tmp_path/source`` into ``tmp_path/output``; it must
    succeed."""
    result = medjax(
        "medjax-predict",
        f"run_dir={run_dir}",
        f"input={tmp_path}/{source}",
        f"output={tmp_path}/{output}",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _predict_nifti(run_dir, data_dir, tmp_path):
    """medjax-predict of a phantom volume saved as ``ct.nii.gz`` with ``AFFINE``
    into ``ct.csv``; returns the volume."""
    volume = _phantom_volume_hu()
    io.save_nifti(volume, tmp_path / "ct.nii.gz", affine=AFFINE)
    _predict(run_dir, data_dir, tmp_path, "ct.nii.gz", "ct.csv")
    return volume


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli_detection")
    result = medjax(
        "medjax-train", *TINY, "hydra.run.dir=run", data_dir=data_dir, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(cwd, "run")


def test_training_logs_froc_metrics_and_figures(run_dir):
    validation = [r for r in records(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4]
    assert {"cpm", "froc_1_8", "froc_8", "ap50", "ap", "sensitivity_r2_3"} <= set(
        validation[-1]
    )
    for name in ("validation_step_000004.png", "validation_step_000004_froc.png"):
        assert os.path.isfile(os.path.join(run_dir, "figures", name))
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["best_metric"] == "cpm"


def test_predict_png_and_nifti_write_candidates(run_dir, data_dir, tmp_path):
    from PIL import Image

    windowed = preprocess.ct_window(_phantom_volume_hu(slices=1)[..., 0])
    Image.fromarray(np.round((windowed + 1) * 127.5).astype(np.uint8)).save(
        tmp_path / "s.png"
    )
    _predict(run_dir, data_dir, tmp_path, "s.png", "s.csv")
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "s.json", "s.png", "s_overlay.png"]
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert 1 <= len(rows) <= 8 and rows[0]["x_mm"] == ""
    assert all(0 <= float(r["voxel_0"]) <= 31 for r in rows)

    _predict_nifti(run_dir, data_dir, tmp_path)
    with open(tmp_path / "ct.json") as f:
        found = json.load(f)["candidates"]
    assert 1 <= len(found) <= 3 * 8  # a 2D model: up to 8 per slice
    first = found[0]
    voxel = [first["voxel_0"], first["voxel_1"], first["voxel_2"], 1.0]
    np.testing.assert_allclose(
        (AFFINE @ voxel)[:3], [first["x_mm"], first["y_mm"], first["z_mm"]], atol=1e-3
    )


def test_predict_points_need_a_csv_output(run_dir, data_dir, tmp_path):
    io.save_nifti(_phantom_volume_hu(), tmp_path / "ct.nii.gz", affine=np.eye(4))
    result = medjax(
        "medjax-predict",
        f"run_dir={run_dir}",
        f"input={tmp_path}/ct.nii.gz",
        f"output={tmp_path}/mask.nii.gz",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "expected a .csv path" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def landmark_run(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli_landmarks")
    result = medjax(
        "medjax-train",
        "task=landmarks",
        "model=unet_tiny",
        "data=phantoms_tiny",
        "trainer=smoke",
        "optim=adam",
        # Softmax presence scores are above 0: every landmark is called
        # present, so each slice gives all six.
        "task.loss_function=softmax",
        "task.presence_threshold=0",
        "hydra.run.dir=run",
        data_dir=data_dir,
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(cwd, "run")


def test_landmark_run_keeps_the_checkpoint_of_lowest_mre(landmark_run):
    with open(os.path.join(landmark_run, "summary.json")) as f:
        summary = json.load(f)
    validation = [r for r in records(landmark_run) if r["split"] == "validation"]
    assert summary["best_metric"] == "mre"
    assert summary["best"]["mre"] == min(r["mre"] for r in validation)
    with open(os.path.join(landmark_run, "config.yaml")) as f:
        assert "best_mode: min" in f.read()


def test_predict_on_a_landmark_run_writes_named_points_in_world_mm(
    landmark_run, data_dir, tmp_path
):
    from tests.tasks.landmarks.test_end_to_end import NAMES

    volume = _predict_nifti(landmark_run, data_dir, tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "ct.csv", "ct.json", "ct.nii.gz", "ct_overlay.png"
    ]
    with open(tmp_path / "ct.csv") as f:
        rows = list(csv.DictReader(f))
    slices = volume.shape[2]
    # A 2D model on a volume: the six landmarks on every slice, each named.
    assert len(rows) == 6 * slices
    assert sorted(r["name"] for r in rows) == sorted(NAMES * slices)
    for row in rows:
        voxel = [float(row[f"voxel_{a}"]) for a in range(3)]
        assert all(0 <= v <= n - 1 for v, n in zip(voxel, volume.shape))
        np.testing.assert_allclose(
            (AFFINE @ [*voxel, 1.0])[:3],
            [float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])],
            atol=1e-3,
        )
    assert sorted({float(r["voxel_2"]) for r in rows}) == list(range(slices))
