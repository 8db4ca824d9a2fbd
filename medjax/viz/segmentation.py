"""Figures of segmentations: label maps drawn as contours over their images, and
the per-case figure of truth against prediction that segmentation runs write at
each evaluation."""


import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

import medjax.viz  # the one backend setting, and save_figure

#: One colour per organ label 1, 2, ... (label 0, the background, is not drawn).
ORGAN_COLOURS = ListedColormap(
    ["#ffd166", "#118ab2", "#ef476f", "#8338ec", "#f8f9fa", "#e63946", "#06d6a0"]
)


def draw_label_contours(ax, labels: np.ndarray, *, linewidth: float = 0.5) -> None:
    """The boundary of every label ``1..max`` of a 2D label map, one colour per
    label (``ORGAN_COLOURS``)."""
    if labels.max() > 0:
        ax.contour(
            labels,
            levels=np.arange(0.5, labels.max() + 1),
            cmap=ORGAN_COLOURS,
            linewidths=linewidth,
        )


def draw_contours(
    ax,
    image: np.ndarray,
    prediction: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    *,
    vmin=None,
    vmax=None,
) -> None:
    """One 2D image in grey with the boundaries of every labelled region: the
    truth in red, the prediction in yellow (as in the seed's prostate figure)."""
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
    for labels, colour, width in ((truth, "red", 1.0), (prediction, "yellow", 0.8)):
        if labels is None:
            continue
        for value in np.unique(labels[labels > 0]):
            ax.contour(labels == value, levels=[0.5], colors=colour, linewidths=width)
    ax.axis("off")


def _most_foreground_slice(truth: np.ndarray) -> int:
    """The axial slice (last axis) of a volume that shows the most truth classes
    (the middle one of those that tie): lesions through their middle, organs where
    most of them meet."""
    classes = np.array([len(np.unique(truth[..., k])) for k in range(truth.shape[-1])])
    candidates = np.flatnonzero(classes == classes.max())
    return int(candidates[len(candidates) // 2])


def draw_segmentations(
    images, truths, predictions, path: str, *, dice=None, title: str = ""
) -> None:
    """Writes a PNG with one panel per case: ``images [N, *S]`` in grey, truth
    contours in red, predicted contours in yellow; volumes are shown at the axial
    slice that shows the most truth classes. ``dice [N, C]`` titles each panel with
    its mean foreground Dice."""
    count = len(images)
    fig, axes = plt.subplots(
        1, max(count, 1), figsize=(2.6 * max(count, 1), 2.9), squeeze=False
    )
    for i in range(count):
        image, truth, prediction = images[i], truths[i], predictions[i]
        label = ""
        if image.ndim == 3:
            k = _most_foreground_slice(truth)
            image, truth, prediction = image[..., k], truth[..., k], prediction[..., k]
            label = f"slice {k}"
        draw_contours(axes[0, i], image, prediction, truth)
        if dice is not None and np.isfinite(dice[i][1:]).any():
            label = f"Dice {np.nanmean(dice[i][1:]):.3f}" + (
                f", {label}" if label else ""
            )
        axes[0, i].set_title(label, fontsize=8)
    fig.suptitle(f"{title}  (truth red, prediction yellow)", fontsize=9)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=110)
