"""``medjax-report`` on a real 2-variant x 2-seed multirun of the tiny preset:
its table is the mean and sample sd of the runs' own metrics."""

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
SWEEP = ["-m", "model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam",
         "optim.lr=0.01,0.001", "seed=0,1"]


def run(program, *args, data_dir, cwd):
    env = {**os.environ, "MEDJAX_DATA": data_dir}
    result = subprocess.run([os.path.join(BIN, program), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def multirun(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    run("medjax-train", *SWEEP, data_dir=data_dir, cwd=cwd)
    return cwd / "runs" / "default" / "multirun"


def by_hand(directory, split_file, metric):
    """{lr: (mean, sd)} from each job's own file, by the statistics module."""
    values = {}
    for name in os.listdir(directory):
        if "seed=" not in name:
            continue
        lr = name.split("optim.lr=")[1].split(",")[0]
        with open(directory / name / split_file) as f:
            content = json.load(f)
        found = content["best"] if split_file == "summary.json" else content["metrics"]
        values.setdefault(lr, []).append(found[metric])
    assert sorted(len(v) for v in values.values()) == [2, 2]  # 2 variants x 2 seeds
    return {lr: (statistics.mean(v), statistics.stdev(v)) for lr, v in values.items()}


def rows(path):
    with open(path) as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def test_report_is_the_mean_and_sd_over_seeds(multirun, data_dir, tmp_path):
    result = run("medjax-report", str(multirun), "--metrics", "auroc", "loss",
                 data_dir=data_dir, cwd=tmp_path)
    table = rows(multirun / "report.csv")
    assert set(table) == {"optim.lr=0.01", "optim.lr=0.001"}  # seeds pooled, constants dropped
    for metric in ("auroc", "loss"):
        for lr, (mean, sd) in by_hand(multirun, "summary.json", metric).items():
            row = table[f"optim.lr={lr}"]
            assert row["seeds"] == "0 1"
            assert float(row[f"{metric}_mean"]) == pytest.approx(mean, rel=1e-12)
            assert float(row[f"{metric}_sd"]) == pytest.approx(sd, rel=1e-12)
            assert f"| optim.lr={lr} | 2 |" in result.stdout
    mean, sd = by_hand(multirun, "summary.json", "auroc")["0.01"]
    assert f"{mean:.4f} ± {sd:.4f}" in (multirun / "report.md").read_text()
    assert (multirun / "report.png").stat().st_size > 5000


def test_report_of_test_metrics_evaluates_the_best_checkpoints(multirun, data_dir, tmp_path):
    out = tmp_path / "report"
    run("medjax-report", str(multirun), "--split", "test", "--evaluate", "--metrics",
        "auroc", "--out", str(out), data_dir=data_dir, cwd=tmp_path)
    table = rows(out / "report.csv")
    for lr, (mean, sd) in by_hand(multirun, "eval.json", "auroc").items():
        assert table[f"optim.lr={lr}"]["split"] == "test"
        assert float(table[f"optim.lr={lr}"]["auroc_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(table[f"optim.lr={lr}"]["auroc_sd"]) == pytest.approx(sd, rel=1e-12)


def test_a_directory_without_runs_fails_in_one_line(tmp_path):
    result = subprocess.run([os.path.join(BIN, "medjax-report"), str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("medjax-report: error:")
    assert "no medjax-train runs below it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
