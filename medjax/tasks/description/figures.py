"""The description task's figure: slices with their true and generated findings."""

import math

import matplotlib.pyplot as plt
import numpy as np

import medjax.viz  # the one backend setting, and save_figure


def plot_findings(
    images: np.ndarray,
    truths: list[str],
    generated: list[str],
    path: str,
    title: str = "",
    columns: int = 4,
) -> None:
    """A grid of ``images [N, H, W]`` titled with the true finding (T) and the
    generated one (G: green when it is the same, red otherwise), to ``path``."""
    count = len(images)
    rows = max(1, math.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows))
    for index, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if index >= count:
            continue
        ax.imshow(images[index], cmap="gray", vmin=-1, vmax=1)
        same = truths[index] == generated[index]
        ax.set_title(f"T: {truths[index]}", fontsize=7, loc="left", pad=13)
        ax.text(
            0.0,
            1.015,
            f"G: {generated[index]}",
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
            color="tab:green" if same else "tab:red",
        )
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(h_pad=2.0)
    medjax.viz.save_figure(fig, path, dpi=110)
