"""Figures of reconstruction and anomaly detection: image, reconstruction and
anomaly map per case; latent codes projected on two principal components."""

import matplotlib.pyplot as plt
import numpy as np

from medjax import viz  # the one backend setting, and save_figure


def _axial(volume: np.ndarray, mask: np.ndarray | None) -> int:
    """The axial slice with the most lesion (the middle one without any)."""
    if mask is not None and mask.any():
        return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(0)))
    return volume.shape[-1] // 2


def draw_anomaly_cases(
    images: np.ndarray, reconstructions: np.ndarray, maps: np.ndarray,
    lesion_masks: np.ndarray | None, path: str, *, scores: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Writes a PNG, one row per case: image, reconstruction, anomaly map (its
    own colour scale per row) and, when given, the lesion mask; lesions are
    contoured in red on image and map. Inputs ``[N, *S]`` (volumes: the axial
    slice with the most lesion)."""
    count = len(images)
    columns = 3 + (lesion_masks is not None)
    fig, axes = plt.subplots(
        max(count, 1), columns, figsize=(2.2 * columns, 2.2 * max(count, 1) + 0.4), squeeze=False
    )
    names = ["image", "reconstruction", "anomaly map", "lesion mask"]
    for i in range(count):
        mask = None if lesion_masks is None else lesion_masks[i]
        panels = [images[i], reconstructions[i], maps[i]] + ([mask] if mask is not None else [])
        if images[i].ndim == 3:
            k = _axial(images[i], mask)
            panels = [p[..., k] for p in panels]
            mask = None if mask is None else mask[..., k]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j < 2:
                ax.imshow(panel, cmap="gray", vmin=-1, vmax=1)
            elif j == 2:
                ax.imshow(panel, cmap="inferno", vmin=0, vmax=max(float(panel.max()), 1e-6))
            else:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            if mask is not None and mask.any() and j in (0, 2):
                ax.contour(mask > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.axis("off")
            if i == 0:
                ax.set_title(names[j], fontsize=8)
        if scores is not None:
            axes[i, 2].text(
                0.02, 0.02, f"score {float(scores[i]):.3g}", color="white", fontsize=7,
                transform=axes[i, 2].transAxes,
            )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    viz.save_figure(fig, path, dpi=100)


def draw_projection(projection, labels, ratio, path: str, *, title: str = "") -> None:
    """A scatter of ``projection [N, 2]`` with one colour per label value."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    names = {0: "healthy", 1: "lesion"}
    for value in np.unique(labels):
        chosen = labels == value
        ax.scatter(projection[chosen, 0], projection[chosen, 1], s=9, alpha=0.7,
                   label=f"{names.get(int(value), f'label {value}')} ({chosen.sum()})")
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} % of variance)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    viz.save_figure(fig, path, dpi=110)
