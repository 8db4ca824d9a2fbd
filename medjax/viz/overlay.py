"""Segmentation overlays as plain PNG files: an image in grey with the contours
of predicted (yellow) and true (red) labels, one output pixel per input pixel.

Drawn with Pillow alone, so no matplotlib backend is involved.
"""

from pathlib import Path

import numpy as np
import scipy.ndimage

from medjax import viz  # noqa: F401
from medjax.data.io.volume import PathLike, format_error
from medjax.files import atomic_path


def mask_edges(mask: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: the pixels of each label (> 0) that touch another label or
    the background (4-neighbourhood), i.e. the inner contour of every region."""
    mask = np.asarray(mask)
    edges = np.zeros(mask.shape, bool)
    for label in np.unique(mask):
        if label == 0:
            continue
        region = mask == label
        edges |= region & ~scipy.ndimage.binary_erosion(region, border_value=0)
    return edges


PREDICTION_COLOR = (255, 255, 0)  # yellow
TRUTH_COLOR = (255, 0, 0)  # red


def save_overlay_png(
    image2d: np.ndarray,
    mask2d: np.ndarray,
    path: PathLike,
    *,
    truth: np.ndarray | None = None,
) -> Path:
    """Writes an RGB PNG ``[H, W]`` of ``image2d`` in gray (min..max stretched to
    0..255) with the contours of each predicted label in yellow and, when given,
    of each ``truth`` label in red (drawn first, so yellow wins where they meet).
    One output pixel per input pixel."""
    from PIL import Image

    image2d = np.asarray(image2d, np.float64)
    if image2d.ndim == 3 and image2d.shape[-1] == 1:
        image2d = image2d[..., 0]
    if image2d.ndim != 2:
        raise format_error(path, f"overlay image must be 2D, got shape {image2d.shape}")
    for name, other in (("mask", mask2d), ("truth", truth)):
        if other is not None and np.shape(other) != image2d.shape:
            raise format_error(
                path,
                f"{name} shape {np.shape(other)} does not match image {image2d.shape}",
            )
    low, high = float(np.min(image2d)), float(np.max(image2d))
    gray = (image2d - low) / (high - low) if high > low else np.zeros_like(image2d)
    rgb = np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if truth is not None:
        rgb[mask_edges(truth)] = TRUTH_COLOR
    rgb[mask_edges(mask2d)] = PREDICTION_COLOR
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:  # a failed write keeps a previous file
        Image.fromarray(rgb, mode="RGB").save(temporary, format="PNG")
    return path
