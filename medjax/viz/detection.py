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
