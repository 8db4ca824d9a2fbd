"""A full disk while writing a mask or an overlay leaves the previous file
intact, leaves no temporary file, and says where and why in one line."""

import errno

import nibabel
import numpy as np
import pytest
from PIL import Image

from medjax.data import io
from medjax.errors import WriteError
from medjax.viz.overlay import save_overlay_png


def _mask(value):
    mask = np.zeros((9, 13), np.uint8)
    mask[2:5, 3 : 3 + 4 * value] = value
    return mask


def _write_nifti(mask, path):
    io.save_nifti(mask, path, affine=np.diag([2.0, 3.0, 1.0, 1.0]))


def _write_png(mask, path):
    io.save_png_mask(mask, path)


def _write_overlay(mask, path):
    save_overlay_png(np.linspace(0, 1, mask.size).reshape(mask.shape), mask, path)


def _full_disk(write):
    """``write(self_or_image, filename, ...)`` that writes a few bytes to
    ``filename`` and then fails as a full disk does."""

    def failing(first, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"torn")
        raise OSError(errno.ENOSPC, "No space left on device")

    return failing


@pytest.mark.parametrize(
    "name, write, target, attribute",
    [
        ("mask.nii.gz", _write_nifti, nibabel, "save"),
        ("mask.png", _write_png, Image.Image, "save"),
        ("mask_overlay.png", _write_overlay, Image.Image, "save"),
    ],
)
def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, name, write, target, attribute):
    path = tmp_path / name
    write(_mask(1), path)
    before = path.read_bytes()
    monkeypatch.setattr(target, attribute, _full_disk(getattr(target, attribute)))
    with pytest.raises(WriteError) as raised:
        write(_mask(2), path)
    assert str(raised.value) == (
        f"{path}: could not write it (No space left on device); the previous file is intact"
    )
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left
    monkeypatch.undo()
    write(_mask(2), path)  # and the next write succeeds
    assert path.read_bytes() != before
