"""Sweeps as Hydra launches them: in parallel on this machine (joblib, each
job on its own cores), as submitit's local jobs, and an Optuna search."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

BIN = os.path.join(os.path.dirname(sys.executable), "medjax-train")
TINY = ["model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]


def sweep(*args, data_dir, cwd):
    env = {**os.environ, "MEDJAX_DATA": data_dir}
    result = subprocess.run([BIN, "-m", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def jobs(directory):
    return sorted(d for d in os.listdir(directory) if "=" in d)


def assert_complete(run_dir, steps=4):
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "figures/curves.png",
                 f"checkpoints/{steps}"):
        assert os.path.exists(os.path.join(run_dir, name)), (run_dir, name)
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == steps and not summary["interrupted"]


def test_parallel_sweep_gives_each_job_its_own_cores(data_dir, tmp_path):
    sweep("hydra/launcher=parallel", *TINY, "seed=0,1", data_dir=data_dir, cwd=tmp_path)
    directory = tmp_path / "runs" / "default" / "multirun"
    names = jobs(directory)
    assert [n.split("seed=")[1].split(",")[0] for n in names] == ["0", "1"]
    shares = {}
    for name in names:
        assert_complete(directory / name)
        log = (directory / name / "train.log").read_text()
        found = re.search(r"parallel sweep job in slot (\d) of 2: cores \[([\d, ]+)\]", log)
        assert found, log[-2000:]
        shares[int(found.group(1))] = {int(c) for c in found.group(2).split(",")}
    assert sorted(shares) == [0, 1]  # two workers, two slots
    assert not shares[0] & shares[1]  # no core shared


def test_submitit_local_sweep(data_dir, tmp_path):
    sweep("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *TINY,
          "seed=0,1", data_dir=data_dir, cwd=tmp_path)
    directory = tmp_path / "runs" / "default" / "multirun"
    names = jobs(directory)
    assert len(names) == 2
    for name in names:
        assert_complete(directory / name)


def test_optuna_search_reports_its_best_trial(data_dir, tmp_path):
    result = sweep("experiment=search_main_job", *TINY, "optim=adamw",
                   "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.n_startup_trials=2",
                   data_dir=data_dir, cwd=tmp_path)
    directory = tmp_path / "runs" / "search_main_job" / "multirun"
    trials = {}
    for name in jobs(directory):
        assert_complete(directory / name)
        with open(directory / name / "summary.json") as f:
            trials[name] = json.load(f)["best"]["auroc"]
    assert len(trials) == 3
    with open(directory / "optimization_results.yaml") as f:
        best = yaml.safe_load(f)
    assert best["best_value"] == pytest.approx(max(trials.values()))
    winners = [n for n, v in trials.items() if v == pytest.approx(max(trials.values()))]
    assert any(f"optim.lr={best['best_params']['optim.lr']}," in n
               and f"augment={best['best_params']['augment']}," in n for n in winners)
    assert 3e-4 <= best["best_params"]["optim.lr"] <= 3e-2
    assert "Best value" in result.stdout + result.stderr
