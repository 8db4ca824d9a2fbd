"""What a run writes beside its checkpoints: ``metrics.jsonl``, TensorBoard events
and ``summary.json`` (``figures/curves.png`` is drawn by ``medjax.viz.curves``)."""

import json
import math
import os
from typing import Any

from tensorboardX import SummaryWriter


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


def write_json(path: str, content: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
