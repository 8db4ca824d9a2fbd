"""Bad image files raise one-line ImageFormatError (an InputError) naming the
file, from the specific exceptions nibabel, pydicom and Pillow raise; anything
else stays a traceback."""

import io
import struct

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medjax.data import io as medio
from medjax.errors import InputError


def _nifti_bytes(shape=(9, 10, 11), dtype=np.int16) -> bytes:
    image = nib.Nifti1Image(np.arange(np.prod(shape), dtype=dtype).reshape(shape), np.eye(4))
    return image.to_bytes()


def _ct_bytes() -> bytes:
    from pydicom.data import get_testdata_file

    with open(get_testdata_file("CT_small.dcm"), "rb") as f:
        return f.read()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(35 * 41, dtype=np.uint8).reshape(35, 41)).save(buffer, "PNG")
    return buffer.getvalue()


def _bad_dtype_code() -> bytes:
    content = bytearray(_nifti_bytes())
    content[70:72] = struct.pack("<h", 1234)  # the header's datatype field
    return bytes(content)


def _gzip_cut() -> bytes:
    import gzip

    content = gzip.compress(_nifti_bytes((30, 30, 30), np.float32))
    return content[: len(content) // 2]


CASES = [
    ("cut.nii", lambda: _nifti_bytes()[:400], "could the file be damaged"),
    ("cut.nii.gz", _gzip_cut, "not a readable NIfTI file"),
    ("empty.nii", lambda: b"", "Empty file"),
    ("text.nii", lambda: b"plain text\n" * 40, "not a readable NIfTI file"),
    ("plain.nii.gz", _nifti_bytes, "not a gzip file"),
    ("code.nii", _bad_dtype_code, "data code 1234 not recognized"),
    ("line.nii", lambda: _nifti_bytes((50,)), "image of shape (50,): expected 2D or 3D"),
    ("cut.dcm", lambda: _ct_bytes()[: len(_ct_bytes()) // 2], "cannot decode pixel data"),
    ("header.dcm", lambda: _ct_bytes()[:132], "DICOM file has no pixel data"),
    ("empty.dcm", lambda: b"", "not a DICOM file"),
    ("cut.png", lambda: _png_bytes()[:60], "not a readable PNG image"),
    ("empty.png", lambda: b"", "not a readable PNG image"),
    ("text.png", lambda: b"plain text\n" * 20, "not a readable PNG image"),
]


@pytest.mark.parametrize("name, content, problem", CASES, ids=[c[0] for c in CASES])
def test_a_bad_file_raises_one_line_naming_it(name, content, problem, tmp_path):
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(medio.ImageFormatError) as raised:
        medio.load_image(path)
    message = str(raised.value)
    assert isinstance(raised.value, InputError)
    assert message.startswith(f"{path}: ") and problem in message
    assert "\n" not in message


def test_a_bad_slice_in_a_series_names_that_slice(tmp_path):
    import pydicom

    ct = _ct_bytes()
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "a.dcm").write_bytes(ct)
    neighbour = pydicom.dcmread(io.BytesIO(ct))
    neighbour.ImagePositionPatient[2] += 5.0  # the next slice up
    buffer = io.BytesIO()
    neighbour.save_as(buffer)
    (tmp_path / "series" / "b.dcm").write_bytes(buffer.getvalue()[:-5000])
    with pytest.raises(medio.ImageFormatError, match=r"b\.dcm: "):
        medio.load_image(tmp_path / "series")


def test_a_bug_is_not_reported_as_a_bad_file(tmp_path, monkeypatch):
    # a TypeError inside the loader is ours, not the file's: it keeps its type
    path = tmp_path / "good.nii"
    path.write_bytes(_nifti_bytes())

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(nib, "load", broken)
    with pytest.raises(TypeError, match="a bug"):
        medio.load_nifti(path)
