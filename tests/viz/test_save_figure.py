"""Figures are saved atomically: a failed save (a full disk) keeps the previous
figure byte for byte, leaves no temporary file, raises WriteError and still
closes the figure; the format comes from the real name."""

import errno
import os

import matplotlib.pyplot as plt
import pytest

from medjax import viz
from medjax.errors import WriteError
from medjax.viz import curves

RECORDS = [
    {"step": 1, "split": "train", "loss": 2.0},
    {"step": 2, "split": "train", "loss": 1.0},
    {"step": 2, "split": "validation", "loss": 1.5, "auroc": 0.6},
]


def test_a_failed_save_keeps_the_previous_figure(tmp_path, monkeypatch):
    path = tmp_path / "figures" / "curves.png"
    curves.plot_curves(RECORDS, str(path))  # creates figures/
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    more = RECORDS + [{"step": 4, "split": "validation", "loss": 1.2, "auroc": 0.7}]
    with pytest.raises(WriteError) as raised:
        curves.plot_curves(more, str(path))
    assert str(raised.value) == (
        f"{path}: could not write it (No space left on device); "
        "the previous file is intact"
    )
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["curves.png"]
    assert plt.get_fignums() == []  # closed although the save failed


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")]
)
def test_the_format_follows_the_real_name(tmp_path, suffix, magic):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / f"figure{suffix}"
    viz.save_figure(fig, str(path), dpi=50)
    assert path.read_bytes().startswith(magic)
    assert os.listdir(tmp_path) == [path.name]
    assert not plt.fignum_exists(fig.number)
