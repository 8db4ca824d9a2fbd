"""metrics.jsonl: records as JSON (NaN as null), and a resumed run dropping the
records an interrupted run wrote after its checkpoint."""

import json

from medjax.engine import reporting


def test_a_resumed_log_keeps_records_up_to_its_step(tmp_path):
    log = reporting.MetricsLog(str(tmp_path))
    log.write(1, "train", {"loss": 1.5})
    log.write(2, "validation", {"loss": 0.5, "dice": float("nan"), "num_examples": 3})
    log.write(3, "train", {"loss": 0.25})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[1]) == {
        "step": 2,
        "split": "validation",
        "loss": 0.5,
        "dice": None,
        "num_examples": 3,
    }
    resumed = reporting.MetricsLog(str(tmp_path), resume_step=2)
    resumed.close()
    assert [r["step"] for r in resumed.records] == [1, 2]
    assert reporting.read_metrics(str(tmp_path / "metrics.jsonl")) == resumed.records
