"""PNG in and out through Pillow: 2D grey images and 8-bit label maps.

PNG images stay in image order ``(row, column)`` = ``(H, W)`` with an identity
affine (see ``medjax.data.io.volume``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medjax.data.io.volume import PathLike, Volume, format_error, one_line
from medjax.files import atomic_path


def load_png(path: PathLike) -> Volume:
    """Reads a PNG as one grayscale 2D image ``[H, W]`` (color is converted to
    luminance; 8- and 16-bit gray keep their values and dtype) with an identity
    affine: index ``(row, column)`` -> world ``(row, column, 0)``, spacing 1."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise format_error(path, "no such file")
    if os.path.isdir(path):
        raise format_error(path, "a directory, not a PNG file")
    try:
        with Image.open(path) as image:
            if image.mode in ("L", "I;16", "I", "F"):
                array = np.array(image)
            elif image.mode == "1":
                array = np.array(image).astype(np.uint8)
            else:
                array = np.array(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise format_error(
            path, f"not a readable PNG image ({one_line(error)})"
        ) from None
    return Volume(array=array, affine=np.eye(4), source="png", path=os.fspath(path))


def _uint8_labels(mask: np.ndarray, path: PathLike) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise format_error(path, f"a PNG mask must be 2D, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise format_error(path, "PNG mask labels must lie in 0..255")
    return mask.astype(np.uint8)


def save_png_mask(mask: np.ndarray, path: PathLike) -> Path:
    """Writes a 2D label map ``[H, W]`` (values 0..255) as an 8-bit gray PNG,
    under a temporary name then renamed (a failed write keeps a previous file).

    Raises:
        WriteError: the file could not be written (full disk, no permission).
    """
    from PIL import Image

    labels = _uint8_labels(mask, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(labels, mode="L").save(temporary, format="PNG")
    return path
