"""FROC curves: ``figures/froc.png``, one line per system against false
positives per scan on LUNA16's log axis (1/8 to 8), CPM in the legend."""

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np

import medjax.viz  # the one backend setting, and save_figure


def plot_froc(results: Mapping[str, Mapping], path: str, title: str = "") -> None:
    """FROC curves of one or more systems.

    Args:
        results: name -> ``medjax.metrics.detection.froc(...)`` result (its
            ``fps``, ``sensitivity``, ``fp_rates``, ``sensitivities`` and
            ``cpm``); a system without lesions (NaN sensitivity) is left out.
        path: the figure file, e.g. ``figures/froc.png``.
        title: above the axes.
    """
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    for name, result in results.items():
        if not np.isfinite(result["sensitivity"]).all():
            continue
        # The curve is a staircase between its points; draw it as LUNA16 does,
        # through the points, starting just inside the log axis.
        fps = np.maximum(np.asarray(result["fps"]), 1e-3)
        (line,) = ax.plot(
            fps, result["sensitivity"], lw=1.3, label=f"{name} ({result['cpm']:.3f})"
        )
        ax.plot(
            result["fp_rates"],
            result["sensitivities"],
            "o",
            ms=3,
            color=line.get_color(),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlim(0.125, 8)
    ax.set_xticks(
        [0.125, 0.25, 0.5, 1, 2, 4, 8], ["1/8", "1/4", "1/2", "1", "2", "4", "8"]
    )
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right", title="CPM", title_fontsize=7)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=100)


def _box_rectangle(box: np.ndarray, **style):
    """A matplotlib rectangle of a 2D box (rows, columns), voxel edges
    ``min - 0.5 .. max + 0.5``."""
    from matplotlib.patches import Rectangle

    r0, c0, r1, c1 = (float(v) for v in box[:4])
    return Rectangle(
        (c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, **style
    )


def _slice_of(boxes: np.ndarray, points: np.ndarray | None, depth: int) -> int:
    """The axial slice (last axis) of a volume to show: through the first truth
    box's centre, else the first candidate's, else the middle."""
    if len(boxes):
        return int(np.clip(np.rint(0.5 * (boxes[0][2] + boxes[0][5])), 0, depth - 1))
    if points is not None and len(points):
        return int(np.clip(np.rint(points[0][2]), 0, depth - 1))
    return depth // 2


def draw_detections(
    images,
    truth_boxes,
    boxes,
    scores,
    path: str,
    *,
    points=None,
    threshold: float = 0.3,
    title: str = "",
    panel_titles=None,
) -> None:
    """One panel per case: the image in grey, truth boxes in red, candidates
    scoring above ``threshold`` as boxes and points coloured by score
    (viridis, 0..1) with the score written beside them.

    Args:
        images: ``N`` arrays ``[*S]`` (2D, or 3D shown at one axial slice: through
            the first truth box, else the best candidate; boxes drawn there are
            those crossing the slice).
        truth_boxes: per case ``[L, 2 * ndim]``.
        boxes: per case ``[K, 2 * ndim]`` candidate boxes, by descending score.
        scores: per case ``[K]``.
        path: the PNG.
        points: per case ``[K, ndim]`` candidate points (None: not drawn).
        threshold: the lowest score drawn.
        title: above the panels.
        panel_titles: per case, a line above its panel (default: the slice).
    """
    count = max(len(images), 1)
    fig, axes = plt.subplots(1, count, figsize=(2.8 * count, 3.1), squeeze=False)
    colours = plt.get_cmap("viridis")
    for i, image in enumerate(images):
        ax = axes[0, i]
        image = np.asarray(image, np.float32)
        truth = np.asarray(truth_boxes[i]).reshape(-1, 2 * image.ndim)
        found = np.asarray(boxes[i]).reshape(-1, 2 * image.ndim)
        score = np.asarray(scores[i]).reshape(-1)
        where = (
            None if points is None else np.asarray(points[i]).reshape(-1, image.ndim)
        )
        label = ""
        if image.ndim == 3:
            k = _slice_of(truth, where, image.shape[-1])
            image, label = image[..., k], f"slice {k}"

            def crosses(b, k=k):
                return (b[:, 2] - 0.5 <= k) & (b[:, 5] + 0.5 >= k)

            truth = truth[crosses(truth)][:, [0, 1, 3, 4]]
            keep = crosses(found)
            found, score = found[keep][:, [0, 1, 3, 4]], score[keep]
            where = None if where is None else where[keep][:, :2]
        ax.imshow(image, cmap="gray")
        for box in truth:
            ax.add_patch(_box_rectangle(box, edgecolor="red", linewidth=1.2))
        shown = score > threshold
        for j in np.flatnonzero(shown)[::-1]:  # the best drawn last, on top
            colour = colours(float(np.clip(score[j], 0, 1)))
            ax.add_patch(_box_rectangle(found[j], edgecolor=colour, linewidth=0.9))
            if where is not None:
                ax.plot(where[j][1], where[j][0], "+", color=colour, ms=5, mew=1)
            ax.text(
                found[j][1] - 0.5,
                found[j][0] - 1.0,
                f"{score[j]:.2f}",
                color=colour,
                fontsize=5,
            )
        if panel_titles is not None:
            label = panel_titles[i]
        ax.set_title(label or f"{int(shown.sum())} above {threshold:g}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=110)
