"""medjax-predict's own promises, through its real entry point in-process with
a stand-in model (tests.inferers.phantom_geometry) in place of a restored
checkpoint: it writes nothing but its outputs, no DICOM identifier reaches
anything it writes or prints, and a full disk is one line that keeps the
previous output."""

import errno
import os
import sys

import nibabel
import numpy as np
import pydicom
import pytest
from omegaconf import OmegaConf

from medjax.config import compose
from medjax.data import io
from medjax.inferers import segmentation
from tests.data.io.test_dicom import IDENTIFIERS  # planted, then looked for
from tests.inferers import phantom_geometry as pg

TINY = ["task=segmentation", "model=unet_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]
CT5N = os.path.join(os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm")),
                    "dicomdirtests", "98892001", "CT5N")  # a real 5-slice CT series


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as medjax-train leaves it, as far as medjax-predict reads
    it before restoring a checkpoint: its resolved config.yaml."""
    directory = tmp_path_factory.mktemp("predict_run")
    OmegaConf.save(OmegaConf.create(OmegaConf.to_container(compose("train", TINY), resolve=True)),
                   directory / "config.yaml")
    return directory


@pytest.fixture
def predict(run_dir, tmp_path, monkeypatch):
    """Runs ``medjax-predict ARGS`` from an empty working directory with the
    stand-in model; returns that directory."""
    monkeypatch.setattr(segmentation, "load_segmenter",
                        lambda *args, **kwargs: pg.stand_in_segmenter(2))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    def run(*args):
        from medjax.cli.predict import main

        monkeypatch.setattr(sys, "argv", ["medjax-predict", f"run_dir={run_dir}",
                                          "compilation_cache=null", *args])
        main()
        return cwd

    return run


def _phantom_nifti(path):
    affine = np.diag([-1.5, -2.0, 2.5, 1.0])
    image, _ = pg.phantom(affine, (13, 11, 6), offset=5.0, radius=2.5, spatial_dims=2)
    io.save_nifti(image, path, affine=affine)


def test_predict_writes_nothing_but_its_outputs(predict, run_dir, tmp_path):
    (tmp_path / "in").mkdir()
    _phantom_nifti(tmp_path / "in" / "ct.nii.gz")
    cwd = predict(f"input={tmp_path}/in/ct.nii.gz", f"output={tmp_path}/out/mask.nii.gz")
    assert os.listdir(cwd) == []  # no predict.log, no .hydra
    assert os.listdir(run_dir) == ["config.yaml"]
    assert os.listdir(tmp_path / "in") == ["ct.nii.gz"]
    assert sorted(os.listdir(tmp_path / "out")) == ["mask.nii.gz", "mask_overlay.png"]
    assert set(np.unique(io.load_nifti(tmp_path / "out" / "mask.nii.gz").array)) == {0, 1, 2, 3, 4}


def test_no_dicom_identifier_reaches_what_predict_writes_or_prints(predict, run_dir, tmp_path, capfd):
    series = tmp_path / "series"
    series.mkdir()
    for name in os.listdir(CT5N):
        dataset = pydicom.dcmread(os.path.join(CT5N, name))
        for keyword, value in IDENTIFIERS.items():
            setattr(dataset, keyword, value)
        dataset.save_as(series / name)
    output = tmp_path / "out" / "series_mask"
    cwd = predict(f"input={series}", f"output={output}")
    printed = capfd.readouterr()
    assert f"wrote {output}" in printed.out
    assert len(os.listdir(output)) == 5

    written = {"stdout": printed.out.encode(), "stderr": printed.err.encode()}
    for root in (tmp_path / "out", cwd, run_dir):
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    written[path] = f.read()
    names = b"\n".join(os.fsencode(p) for p in written)
    planted = b"".join((series / n).read_bytes() for n in os.listdir(series))
    for value in IDENTIFIERS.values():
        assert value.encode() in planted  # the test plants what it looks for
        for where, content in written.items():
            assert value.encode() not in content, (value, where)
        assert value.encode() not in names


def test_a_full_disk_is_one_line_and_keeps_the_previous_mask(predict, tmp_path, monkeypatch):
    _phantom_nifti(tmp_path / "ct.nii.gz")
    output = tmp_path / "mask.nii.gz"
    predict(f"input={tmp_path}/ct.nii.gz", f"output={output}")
    before = output.read_bytes()

    def full_disk(image, filename):
        with open(filename, "wb") as f:
            f.write(b"torn")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nibabel, "save", full_disk)
    with pytest.raises(SystemExit) as raised:
        predict(f"input={tmp_path}/ct.nii.gz", f"output={output}")
    assert str(raised.value) == (
        f"medjax-predict: error: {output}: could not write it (No space left on "
        "device); the previous file is intact"
    )
    assert output.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "cwd", "mask.nii.gz", "mask_overlay.png"]
