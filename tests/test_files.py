"""medjax.files: a write lands whole or not at all. A failed write (a full disk,
simulated by an ``OSError(ENOSPC)``) keeps the previous file, leaves no
temporary file and raises ``WriteError`` naming the path and the reason; the
temporary name ends like the real one, so writers that read the format from
the name (nibabel, matplotlib) write the right one."""

import errno
import gzip
import json
import os

import matplotlib
import numpy as np
import pytest

from medjax import files
from medjax.errors import MedjaxError, WriteError


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_json_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    files.write_json(path, {"step": 3, "dice": 0.5})
    assert path.read_text() == '{\n  "step": 3,\n  "dice": 0.5\n}\n'
    assert json.loads(path.read_text()) == {"step": 3, "dice": 0.5}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_write_json_writes_an_undefined_metric_as_null(tmp_path):
    # json.dumps alone writes NaN, which is not JSON (jq and browsers reject it).
    path = tmp_path / "eval.json"
    files.write_json(path, {"metrics": {"auroc": float("nan"), "hd95": [np.inf, 1.5]}})
    assert json.loads(path.read_text(), parse_constant=pytest.fail) == {
        "metrics": {"auroc": None, "hd95": [None, 1.5]}
    }


def test_a_full_disk_at_the_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    path.write_text('{"auroc": 0.7}\n')
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(WriteError) as raised:
        files.write_json(path, {"auroc": 0.9})
    assert str(raised.value) == (
        f"{path}: could not write it (No space left on device); "
        "the previous file is intact"
    )
    assert isinstance(raised.value, MedjaxError)  # one line through the CLIs
    assert raised.value.__cause__.errno == errno.ENOSPC
    assert path.read_text() == '{"auroc": 0.7}\n'
    assert os.listdir(tmp_path) == ["eval.json"]  # the temporary file is gone


def test_a_full_disk_while_writing_removes_the_partial_temporary_file(tmp_path):
    path = tmp_path / "config.yaml"
    with pytest.raises(
        WriteError, match=r"config\.yaml: could not write it \(No space"
    ), files.atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            f.write("half of a con")
        _full_disk()
    assert os.listdir(tmp_path) == []  # no previous file: no "intact" claim either


def test_other_errors_pass_through_after_the_clean_up(tmp_path):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyError), files.atomic_path(path) as temporary:
        open(temporary, "wb").close()
        raise KeyError("a bug, not a write failure")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["figure.png"]


def test_the_temporary_name_is_hidden_beside_the_file_and_ends_like_it(tmp_path):
    temporary = files.temporary_path(tmp_path / "mask.nii.gz")
    assert os.path.dirname(temporary) == str(tmp_path)  # same file system: rename
    assert os.path.basename(temporary).startswith(".tmp-")
    assert temporary.endswith("-mask.nii.gz")
    assert temporary != files.temporary_path(tmp_path / "mask.nii.gz")


def test_nibabel_and_matplotlib_pick_the_format_from_the_real_name(tmp_path):
    import nibabel as nib

    volume = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = tmp_path / "mask.nii.gz"
    with files.atomic_path(path) as temporary:
        nib.save(nib.Nifti1Image(volume, np.eye(4)), temporary)
    with gzip.open(path) as f:  # compressed, as the name says
        assert len(f.read()) > 0
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), volume)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    with files.atomic_path(tmp_path / "curves.pdf") as temporary:
        fig.savefig(temporary)
    plt.close(fig)
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(os.listdir(tmp_path)) == ["curves.pdf", "mask.nii.gz"]
