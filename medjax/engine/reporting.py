"""What a run writes beside its checkpoints: ``metrics.jsonl``, TensorBoard events
and ``summary.json`` (``figures/curves.png`` is drawn by ``medjax.viz.curves``).

``metrics.jsonl`` survives a kill at any moment. Records are appended one line
at a time, so a kill can only tear the last line: readers drop a torn last line
with a warning. A resumed run must not log the steps after its checkpoint twice,
so it drops them, by writing the kept records to a temporary file renamed over
the log (``medjax.files``): at every instant the log on disk is either the old
one or the new one, never a half-rewritten one. Rewriting (rather than appending
and leaving readers to skip superseded records) keeps the file a plain log that
any reader (``pandas.read_json(lines=True)``, the experiments' scripts) reads
as it is: one record per step and split.
"""

import json
import logging
import math
import os
from typing import Any

from tensorboardX import SummaryWriter

from medjax import files
from medjax.errors import RunDirectoryError

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """JSON-ready: ints stay ints, NaN (an undefined metric) becomes null."""
    if isinstance(value, int):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def _parse(path: str) -> tuple[list[dict[str, Any]], bool]:
    """The records of ``path`` and whether its end needs repair (a torn last
    line, dropped with a warning, or a last record without its newline, which
    the next append would glue onto).

    Raises:
      RunDirectoryError: a line other than the last is not a JSON record. A kill
        only tears the end of an append-only file, so this is damage of another
        kind, reported rather than silently dropping history."""
    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning(
                    "%s: dropped its last line, torn by an interrupted write (%r)",
                    path,
                    line[:80],
                )
                return records, True
            raise RunDirectoryError(
                f"{path}: line {number} is not a JSON record ({error.msg}); the "
                "file is damaged: repair or delete that line to resume"
            ) from error
        if not isinstance(record, dict) or "step" not in record:
            raise RunDirectoryError(
                f"{path}: line {number} is not a metrics record (no 'step')"
            )
        records.append(record)
    return records, bool(text) and not text.endswith("\n")


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (``[]`` if there is none), without a
    torn last line (a run killed while writing, or one still running).

    Raises:
      RunDirectoryError: a line before the last is damaged."""
    if not os.path.exists(path):
        return []
    return _parse(path)[0]


def _lines(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


class MetricsLog:
    """Appends ``{"step", "split", "loss", ...}`` records to ``metrics.jsonl`` and to
    TensorBoard (``<split>/<name>``).

    Opening it at ``resume_step`` drops records written after that step by an
    interrupted run, which the resumed run will write again, and a torn last
    line; the file is then replaced in one rename (see the module docstring).

    With ``write=False`` (every process but the first of a multi-process run)
    it reads the file and keeps the records in memory, writing nothing."""

    def __init__(self, run_dir: str, resume_step: int = 0, write: bool = True):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.writes = write
        records, needs_repair = [], False
        if os.path.exists(self.path):
            records, needs_repair = _parse(self.path)
        kept = [r for r in records if r["step"] <= resume_step]
        if write and (needs_repair or len(kept) < len(records)):
            files.write_text(self.path, _lines(kept))
        elif write and not os.path.exists(self.path):
            files.write_text(self.path, "")
        self.records = kept
        self.tensorboard = (
            SummaryWriter(os.path.join(run_dir, "tensorboard")) if write else None
        )

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
        record = {"step": int(step), "split": split}
        record.update({k: _clean(v) for k, v in metrics.items()})
        self.records.append(record)
        if not self.writes:
            return record
        # One write of one whole line: a kill tears at most this line.
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name not in ("step", "split") and value is not None:
                self.tensorboard.add_scalar(f"{split}/{name}", value, step)
        return record

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def write_json(path: str, content: dict[str, Any]) -> None:
    """``content`` as indented JSON, written atomically (``medjax.files``)."""
    files.write_json(path, content)
