"""Figures of registrations: per pair, the fixed, moving and warped images with
their label contours, the deformation drawn as a warped grid, and the Jacobian
determinant map with its folds (det J <= 0) marked."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

import medjax.viz  # the one backend setting, and save_figure
from medjax.viz.segmentation import draw_label_contours


def draw_deformation_grid(ax, field: np.ndarray, *, spacing: int = 4) -> None:
    """The image of a regular grid under ``x -> x + d(x)``: every ``spacing``-th
    row and column line of ``field [H, W, 2]`` (voxels, array-axis order),
    drawn in image orientation (rows down)."""
    height, width = field.shape[:2]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    mapped_rows, mapped_cols = rows + field[..., 0], cols + field[..., 1]
    for i in range(0, height, spacing):
        ax.plot(mapped_cols[i], mapped_rows[i], color="#118ab2", linewidth=0.5)
    for j in range(0, width, spacing):
        ax.plot(mapped_cols[:, j], mapped_rows[:, j], color="#118ab2", linewidth=0.5)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.axis("off")


def draw_jacobian(ax, determinant: np.ndarray):
    """``det J [H, W]`` on a diverging map centred at 1 (blue compresses, red
    expands), folded voxels (det <= 0) outlined in black. Returns the image."""
    low = min(float(determinant.min()), 0.99)
    high = max(float(determinant.max()), 1.01)
    shown = ax.imshow(determinant, cmap="RdBu_r", norm=TwoSlopeNorm(1.0, low, high))
    folds = determinant <= 0
    if folds.any():
        ax.contour(folds, levels=[0.5], colors="black", linewidths=0.8)
    ax.axis("off")
    return shown


def draw_registrations(
    fixed,
    moving,
    warped,
    fixed_labels,
    moving_labels,
    warped_labels,
    fields,
    jacobians,
    path: str,
    *,
    dice=None,
    title: str = "",
) -> None:
    """Writes a PNG with one row per pair and five panels: fixed (its label
    contours), moving (its contours), warped moving (warped labels' contours,
    the fixed ones dashed white), the deformation grid, the Jacobian map.

    Args:
        fixed, moving, warped: ``[N, H, W]`` images.
        fixed_labels, moving_labels, warped_labels: ``[N, H, W]`` label maps.
        fields: ``[N, H, W, 2]`` pull-back displacements (voxels).
        jacobians: ``[N, H, W]`` determinants.
        path: the PNG.
        dice: ``[N]`` mean organ Dice per pair, for the warped panel's title.
        title: the figure's title.
    """
    count = max(len(fixed), 1)
    fig, axes = plt.subplots(count, 5, figsize=(11.5, 2.4 * count), squeeze=False)
    for i in range(len(fixed)):
        lo, hi = float(np.min(fixed[i])), float(np.max(fixed[i]))
        panels = (
            (fixed[i], fixed_labels[i], "fixed", (lo, hi)),
            (moving[i], moving_labels[i], "moving", (None, None)),
            (warped[i], warped_labels[i], "warped", (None, None)),
        )
        for ax, (image, labels, name, (vmin, vmax)) in zip(axes[i], panels):
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
            draw_label_contours(ax, np.asarray(labels))
            ax.axis("off")
            ax.set_title(name, fontsize=8)
        if fixed_labels[i].max() > 0:
            axes[i, 2].contour(
                fixed_labels[i] > 0,
                levels=[0.5],
                colors="white",
                linewidths=0.5,
                linestyles="dashed",
            )
        if dice is not None and np.isfinite(dice[i]):
            axes[i, 2].set_title(f"warped, Dice {dice[i]:.3f}", fontsize=8)
        draw_deformation_grid(axes[i, 3], np.asarray(fields[i]))
        axes[i, 3].set_title("deformation", fontsize=8)
        shown = draw_jacobian(axes[i, 4], np.asarray(jacobians[i]))
        folded = 100.0 * float(np.mean(np.asarray(jacobians[i]) <= 0))
        axes[i, 4].set_title(f"det J (folds {folded:.2f} %)", fontsize=8)
        fig.colorbar(shown, ax=axes[i, 4], fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=100)
