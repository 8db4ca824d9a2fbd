"""Segmentation end to end through the command line: train, evaluate, and
segment NIfTI, PNG and DICOM inputs with medjax-predict."""

import json
import os

import numpy as np
import pytest

from medjax.data import io, preprocess
from medjax.data.datasets.phantoms import torso as phantoms
from tests.cli.test_cli import medjax, records

pytestmark = pytest.mark.slow  # every test here runs the programs

TINY = ["task=segmentation", "model=unet_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli_segmentation")
    result = medjax("medjax-train", *TINY, "hydra.run.dir=run", data_dir=data_dir, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(cwd, "run")


def test_training_logs_segmentation_metrics_and_draws_cases(run_dir):
    validation = [r for r in records(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4]
    for record in validation:
        assert {"dice", "iou", "hd95", "asd", "dice_liver", "hd95_aorta", "missed_kidney"} <= set(record)
        assert 0.0 <= record["dice"] <= 1.0
    for step in (2, 4):
        assert os.path.isfile(os.path.join(run_dir, "figures", f"validation_step_{step:06d}.png"))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    # trainer.best_metric null -> the task's primary metric, Dice
    assert summary["best_metric"] == "dice"
    assert summary["best"]["dice"] == max(r["dice"] for r in validation)


def test_eval_on_the_test_split(run_dir, data_dir, tmp_path):
    result = medjax("medjax-eval", f"run_dir={run_dir}", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(tmp_path) == []  # eval.log and eval.json go to the run directory
    with open(os.path.join(run_dir, "eval.json")) as f:
        metrics = json.load(f)["metrics"]
    assert metrics["num_examples"] == 12 and 0.0 <= metrics["dice"] <= 1.0


def _phantom_volume_hu(size=32, slices=3):
    cases = [phantoms.torso_slice(np.random.default_rng(i), size) for i in range(slices)]
    # Phantom slices are (row, column); the volume's index axes are the same.
    return np.stack([c["image"] for c in cases], axis=-1).astype(np.int16)


def test_predict_nifti_keeps_shape_and_affine(run_dir, data_dir, tmp_path):
    # rows toward posterior, columns toward the patient's left: the phantoms' layout
    affine = np.array([[0, -12.5, 0, 200.0], [-12.5, 0, 0, 180.0], [0, 0, 5.0, 40.0], [0, 0, 0, 1]])
    io.save_nifti(_phantom_volume_hu(), tmp_path / "ct.nii.gz", affine=affine)
    run_files = sorted(os.listdir(run_dir))
    result = medjax(
        "medjax-predict", f"run_dir={run_dir}", f"input={tmp_path}/ct.nii.gz",
        f"output={tmp_path}/mask.nii.gz", data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mask = io.load_nifti(tmp_path / "mask.nii.gz")
    assert mask.array.shape == (32, 32, 3) and np.issubdtype(mask.array.dtype, np.integer)
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.array.max() < 8
    assert os.path.isfile(tmp_path / "mask_overlay.png")
    # nothing but the outputs: no predict.log in the working directory or the run's
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "mask.nii.gz", "mask_overlay.png"]
    assert sorted(os.listdir(run_dir)) == run_files


def test_predict_png_and_dicom(run_dir, data_dir, tmp_path):
    from PIL import Image

    windowed = preprocess.ct_window(_phantom_volume_hu(slices=1)[..., 0])
    Image.fromarray(np.round((windowed + 1) * 127.5).astype(np.uint8)).save(tmp_path / "slice.png")
    result = medjax(
        "medjax-predict", f"run_dir={run_dir}", f"input={tmp_path}/slice.png",
        f"output={tmp_path}/slice_mask.png", data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.asarray(Image.open(tmp_path / "slice_mask.png")).shape == (32, 32)

    import pydicom

    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):  # pydicom's CT slice as a 3-slice series, 2 mm apart
        ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], 10.0 + 2.0 * k]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(series / f"slice{k}.dcm")
    result = medjax(
        "medjax-predict", f"run_dir={run_dir}", f"input={series}",
        f"output={tmp_path}/series_mask", data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    source, mask = io.load_dicom_series(series), io.load_dicom_series(tmp_path / "series_mask")
    identifiers = [str(ds.PatientName).encode(), str(ds.PatientID).encode()]
    assert all(identifiers) and all(i in (series / "slice0.dcm").read_bytes() for i in identifiers)
    written = [(result.stdout + result.stderr).encode()] + [
        f.read_bytes() for f in (tmp_path / "series_mask").iterdir()
    ]
    assert not [i for i in identifiers for content in written if i in content]
    assert mask.array.shape == source.array.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)


def test_predict_errors_name_the_input(run_dir, data_dir, tmp_path):
    result = medjax(
        "medjax-predict", f"run_dir={run_dir}", f"input={tmp_path}/missing.nii.gz",
        f"output={tmp_path}/out.nii.gz", data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("medjax-predict: error: ")
    assert "missing.nii.gz" in result.stderr
