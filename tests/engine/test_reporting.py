"""metrics.jsonl: records as JSON (NaN as null); a resumed run drops the records
an interrupted run wrote after its checkpoint, and a torn last line, by replacing
the file in one rename (a crash or a full disk meanwhile keeps the old log);
damage before the last line is one clear error. summary.json is written
atomically."""

import errno
import json
import logging
import os

import pytest

from medjax.engine import reporting
from medjax.errors import RunDirectoryError, WriteError


def _log(run_dir, steps):
    log = reporting.MetricsLog(str(run_dir))
    for step in steps:
        log.write(step, "train", {"loss": 1.0 / step})
    log.close()
    return run_dir / "metrics.jsonl"


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


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
    resumed.write(3, "train", {"loss": 0.125})
    resumed.close()
    assert [r["step"] for r in resumed.records] == [1, 2, 3]
    assert reporting.read_metrics(str(tmp_path / "metrics.jsonl")) == resumed.records
    # step 3 once: the interrupted run's record was dropped, the resumed one kept
    assert resumed.records[-1] == {"step": 3, "split": "train", "loss": 0.125}


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_file_repaired(
    tmp_path, caplog
):
    path = _log(tmp_path, [1, 2, 3])
    with open(path, "a") as f:
        f.write('{"step": 4, "split": "tr')  # killed in the middle of a write
    with caplog.at_level(logging.WARNING, logger="medjax.engine.reporting"):
        assert [r["step"] for r in reporting.read_metrics(str(path))] == [1, 2, 3]
        resumed = reporting.MetricsLog(str(tmp_path), resume_step=3)
    assert f"{path}: dropped its last line, torn by an interrupted write" in caplog.text
    assert '{"step": 4, "split": "tr' in caplog.text
    resumed.write(4, "train", {"loss": 0.25})
    resumed.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_a_last_record_without_its_newline_gets_one_before_the_next_append(tmp_path):
    path = _log(tmp_path, [1, 2])
    path.write_text(path.read_text().rstrip("\n"))
    resumed = reporting.MetricsLog(str(tmp_path), resume_step=2)
    resumed.write(3, "train", {"loss": 0.5})
    resumed.close()
    assert [r["step"] for r in reporting.read_metrics(str(path))] == [1, 2, 3]


def test_a_damaged_line_before_the_last_is_one_clear_error(tmp_path):
    path = _log(tmp_path, [1, 2, 3])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
    expected = rf"{path}: line 2 is not a JSON record \(.*\); the file is damaged"
    with pytest.raises(RunDirectoryError, match=expected):
        reporting.read_metrics(str(path))
    with pytest.raises(RunDirectoryError, match=expected):
        reporting.MetricsLog(str(tmp_path), resume_step=3)
    assert path.read_text().splitlines() == lines  # left as it was found


def test_a_crash_while_dropping_records_keeps_the_whole_old_log(tmp_path, monkeypatch):
    path = _log(tmp_path, [1, 2, 3, 4])
    before = path.read_text()
    calls = []

    def dumps_then_crash(record, *args, **kwargs):
        calls.append(record)
        if len(calls) == 2:  # killed while the kept records are being written
            raise KeyboardInterrupt
        return json.JSONEncoder().encode(record)

    monkeypatch.setattr(reporting.json, "dumps", dumps_then_crash)
    with pytest.raises(KeyboardInterrupt):
        reporting.MetricsLog(str(tmp_path), resume_step=2)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]


def test_a_full_disk_while_dropping_records_keeps_the_old_log(tmp_path, monkeypatch):
    path = _log(tmp_path, [1, 2, 3, 4])
    before = path.read_text()
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(WriteError, match="metrics.jsonl: could not write it"):
        reporting.MetricsLog(str(tmp_path), resume_step=2)
    assert path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]


def test_summary_json_survives_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    reporting.write_json(str(path), {"steps": 4, "best": None})
    assert json.loads(path.read_text()) == {"steps": 4, "best": None}
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(WriteError, match=r"summary\.json: .*No space left on device"):
        reporting.write_json(str(path), {"steps": 6, "best": None})
    assert json.loads(path.read_text()) == {"steps": 4, "best": None}
    assert os.listdir(tmp_path) == ["summary.json"]


def test_a_log_that_does_not_write_reads_and_keeps_its_records(tmp_path):
    """Processes other than the first of a multi-process run: the records in
    memory, nothing written, no TensorBoard file."""
    path = _log(tmp_path, [1, 2, 3])
    before = path.read_text()
    reader = reporting.MetricsLog(str(tmp_path), resume_step=2, write=False)
    reader.write(3, "train", {"loss": 0.5})
    reader.close()
    assert [r["step"] for r in reader.records] == [1, 2, 3]
    assert reader.records[-1]["loss"] == 0.5
    assert path.read_text() == before  # step 3 of the old log not even dropped
    assert len(os.listdir(tmp_path / "tensorboard")) == 1  # the writer's only
