"""Training curves: ``figures/curves.png``, one panel per metric (per family of
per-class metrics), a line per split, against the step."""

from collections import defaultdict
from typing import Any

import matplotlib.pyplot as plt

import medjax.viz  # the one backend setting, and save_figure


def _panels(names: list[str]) -> dict[str, list[str]]:
    """Metrics grouped by family: ``dice``, ``dice_liver`` and ``dice_lung`` share
    the panel ``dice`` (a family is a prefix before ``_`` shared by two or more
    metrics); every other metric has its own panel."""
    prefix = {n: n.split("_")[0] for n in names}
    size = defaultdict(int)
    for name in names:
        size[prefix[name]] += 1
    panels: dict[str, list[str]] = defaultdict(list)
    for name in names:
        panels[prefix[name] if size[prefix[name]] > 1 else name].append(name)
    return panels


def plot_curves(records: list[dict[str, Any]], path: str) -> None:
    """A panel per metric (per family of per-class metrics, e.g. ``dice`` with
    ``dice_<class>``), a line per split (and class), against the step."""
    series: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for name, value in record.items():
            if name not in ("step", "split", "num_examples") and value is not None:
                series[name][record["split"]].append((record["step"], value))
    panels = _panels(sorted(series))
    titles = sorted(panels, key=lambda n: (n != "loss", n))
    if not titles:
        return
    columns = min(3, len(titles))
    rows = -(-len(titles) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False
    )
    for ax, title in zip(axes.flat, titles):
        for name in panels[title]:
            for split, points in sorted(series[name].items()):
                steps, values = zip(*points)
                label = (
                    split
                    if len(panels[title]) == 1
                    else (
                        (name[len(title) + 1 :] or "mean")
                        + ("" if split == "validation" else f" ({split})")
                    )
                )
                style = (
                    {"color": "black", "linewidth": 2.0}
                    if name == title and len(panels[title]) > 1
                    else {}
                )
                ax.plot(
                    steps,
                    values,
                    label=label,
                    marker="o" if len(steps) < 30 else None,
                    markersize=3,
                    **style,
                )
        ax.set_title(title if len(panels[title]) == 1 else f"{title} (validation)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        positive = all(v > 0 for split in series["loss"].values() for _, v in split)
        if title == "loss" and positive:  # an RBM's free-energy loss can be negative
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=100)
