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


def plot_curves(records: list[dict[str, Any]], path: str) -> None:
    """One panel per metric, a line per split, against the step."""
    series: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for name, value in record.items():
            if name not in ("step", "split") and value is not None:
                series[name][record["split"]].append((record["step"], value))
    names = sorted(series, key=lambda n: (n != "loss", n))
    if not names:
        return
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split, points in sorted(series[name].items()):
            steps, values = zip(*points)
            ax.plot(steps, values, label=split, marker="o" if len(steps) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
        if name == "loss":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(path: str, content: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
