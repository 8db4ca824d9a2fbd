"""Figures of generative models: grids of images, samples and reconstructions."""

import matplotlib.pyplot as plt
import numpy as np

from medjax import viz  # the one backend setting, and save_figure


def save_image_grid(
    images: np.ndarray, path: str, *, columns: int = 8, title: str = "", cmap: str = "gray"
) -> None:
    """A PNG grid of ``images [N, H, W(, 1)]`` (or ``[N, D]`` with square ``D``),
    each scaled to its own range, ``columns`` a row."""
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(len(images), side, side)
    if images.ndim == 4:
        images = images[..., 0]
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), images):
        ax.imshow(image, cmap=cmap, interpolation="nearest")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    viz.save_figure(figure, path, dpi=100)
