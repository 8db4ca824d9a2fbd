"""Figures of landmarks: true points (circles) and predicted ones (crosses) over
their images, one colour per landmark, named in the legend, with each case's
mean radial error in its title. Volumes are shown as three orthogonal slices
through the mean of their true landmarks, every landmark projected onto each."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

import medjax.viz  # the one backend setting, and save_figure
from medjax.metrics.landmarks import radial_errors

_COLOURS = plt.get_cmap("tab10").colors
# (slice axis, the two axes shown as rows and columns, panel name) of a volume
# [row (anterior-posterior), col (left-right), slice]: a fixed row is coronal,
# a fixed column sagittal.
_VIEWS = ((2, (0, 1), "axial"), (0, (1, 2), "coronal"), (1, (0, 2), "sagittal"))


def _case_error(predicted, truth, present, spacing) -> str:
    if not present.any():
        return "no landmark present"
    errors = radial_errors(predicted[present], truth[present], spacing)
    unit = "mm" if spacing is not None else "vox"
    return f"MRE {errors.mean():.2f} {unit}"


def _draw_points(ax, truth, present, predicted, called, axes):
    rows, cols = axes
    for k in range(len(truth)):
        colour = _COLOURS[k % len(_COLOURS)]
        if present[k]:
            ax.plot(
                truth[k, cols],
                truth[k, rows],
                "o",
                mfc="none",
                mec=colour,
                ms=7,
                mew=1.2,
            )
        if called[k]:
            ax.plot(
                predicted[k, cols], predicted[k, rows], "x", color=colour, ms=6, mew=1.5
            )


def draw_landmarks(
    images: np.ndarray,
    truth: np.ndarray,
    truth_valid: np.ndarray,
    predicted: np.ndarray,
    predicted_present: np.ndarray,
    path: str,
    *,
    names=None,
    spacing=None,
    title: str = "",
) -> None:
    """Cases side by side (2D) or one row of three views per case (3D).

    Args:
        images: ``[N, *S]`` (2D images or 3D volumes, one channel).
        truth, predicted: ``[N, L, ndim]`` voxel coordinates.
        truth_valid, predicted_present: ``[N, L]`` bool; only present truth and
            points called present are drawn.
        path: the PNG written.
        names: ``L`` landmark names for the legend.
        spacing: mm per voxel, for the errors in the titles (None: voxels).
        title: the figure's title.
    """
    images, truth, predicted = (
        np.asarray(images),
        np.asarray(truth),
        np.asarray(predicted),
    )
    truth_valid = np.asarray(truth_valid, bool)
    predicted_present = np.asarray(predicted_present, bool)
    count = len(images)
    names = (
        list(names)
        if names is not None
        else [f"landmark {k}" for k in range(truth.shape[1])]
    )
    volumes = images.ndim == 4
    rows, cols = (count, 3) if volumes else (1, count)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 3.3 * rows + 0.6), squeeze=False
    )
    for case in range(count):
        error = _case_error(predicted[case], truth[case], truth_valid[case], spacing)
        args = (
            truth[case],
            truth_valid[case],
            predicted[case],
            predicted_present[case],
        )
        if not volumes:
            ax = axes[0, case]
            ax.imshow(images[case], cmap="gray")
            _draw_points(ax, *args, (0, 1))
            ax.set_title(f"case {case}: {error}", fontsize=8)
            ax.axis("off")
            continue
        shown = truth[case][truth_valid[case]]
        centre = shown.mean(0) if len(shown) else np.asarray(images[case].shape) / 2
        for column, (axis, shown_axes, view) in enumerate(_VIEWS):
            ax = axes[case, column]
            index = int(np.clip(round(centre[axis]), 0, images[case].shape[axis] - 1))
            ax.imshow(
                np.take(images[case], index, axis=axis), cmap="gray", aspect="auto"
            )
            _draw_points(ax, *args, shown_axes)
            ax.set_title(f"case {case} {view} {index}: {error}", fontsize=7)
            ax.axis("off")
    handles = [
        Line2D(
            [], [], marker="o", ls="none", mfc="none", color=_COLOURS[k % len(_COLOURS)]
        )
        for k in range(len(names))
    ]
    fig.legend(
        handles,
        names,
        loc="lower center",
        ncol=min(len(names), 6),
        fontsize=7,
        title="o truth   x prediction (called present)",
        title_fontsize=7,
    )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    medjax.viz.save_figure(fig, path, dpi=110)
