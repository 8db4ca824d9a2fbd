"""PNG in and out (``medjax.data.io.png``)."""

import numpy as np
import pytest
from PIL import Image

from medjax.data import io


def test_png_load_and_mask_save(tmp_path):
    gray = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) % 256
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "gray.png")
    volume = io.load_png(tmp_path / "gray.png")
    assert volume.array.shape == (20, 30) and volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, gray)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    assert volume.spacing == (1.0, 1.0)

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 200  # green: luminance 0.587 * 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.load_image(tmp_path / "rgb.png").array, 117)

    mask = np.zeros((20, 30), np.int64)
    mask[3:8, 4:9] = 1
    mask[10:15, 20:28] = 5
    path = io.save_like(mask, volume, tmp_path / "out" / "mask.png")
    with Image.open(path) as image:
        assert image.mode == "L" and image.size == (30, 20)
    np.testing.assert_array_equal(io.load_png(path).array, mask)
    with pytest.raises(io.ImageFormatError, match="0..255"):
        io.save_png_mask(mask * 100, tmp_path / "big.png")
    (tmp_path / "fake.png").write_text("no png")
    with pytest.raises(io.ImageFormatError, match="fake.png: not a readable PNG"):
        io.load_png(tmp_path / "fake.png")
