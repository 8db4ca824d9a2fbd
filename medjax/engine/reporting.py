"""What a run writes beside its checkpoints: ``metrics.jsonl``, TensorBoard events,
``figures/curves.png`` and ``summary.json``."""

import json
import math
import os
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402


def _clean(value: Any) -> Any:
    """JSON-ready: ints stay ints, NaN (an undefined metric) becomes null."""
    if isinstance(value, int):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def read_metrics(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends ``{"step", "split", "loss", ...}`` records to ``metrics.jsonl`` and to
    TensorBoard (``<split>/<name>``).

    Opening it at ``resume_step`` drops records written after that step by an
    interrupted run, which the resumed run will write again."""

    def __init__(self, run_dir: str, resume_step: int = 0):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self.records = kept
        self.tensorboard = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"step": int(step), "split": split}
        record.update({k: _clean(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.records.append(record)
        for name, value in record.items():
            if name not in ("step", "split") and value is not None:
                self.tensorboard.add_scalar(f"{split}/{name}", value, step)
        return record

    def close(self) -> None:
        self.tensorboard.close()


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
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax, title in zip(axes.flat, titles):
        for name in panels[title]:
            for split, points in sorted(series[name].items()):
                steps, values = zip(*points)
                label = split if len(panels[title]) == 1 else (
                    (name[len(title) + 1:] or "mean") + ("" if split == "validation" else f" ({split})")
                )
                style = dict(color="black", linewidth=2.0) if name == title and len(panels[title]) > 1 else {}
                ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None,
                        markersize=3, **style)
        ax.set_title(title if len(panels[title]) == 1 else f"{title} (validation)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        positive = all(v > 0 for split in series["loss"].values() for _, v in split)
        if title == "loss" and positive:  # an RBM's free-energy loss can be negative
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(titles):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(path: str, content: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
