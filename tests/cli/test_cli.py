"""The command-line tools end to end, on the tiny preset (4 CPU devices)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from medjax.engine.checkpoint import Checkpoints

pytestmark = pytest.mark.slow  # every test here runs the programs

TINY = ["model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]
BIN = os.path.dirname(sys.executable)


def medjax(program, *args, data_dir, cwd):
    env = {**os.environ, "MEDJAX_DATA": data_dir}
    return subprocess.run(
        [os.path.join(BIN, program), *args], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=600,
    )


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A smoke run, stopped at step 4 and resumed to step 6."""
    cwd = tmp_path_factory.mktemp("cli")
    first = medjax("medjax-train", *TINY, data_dir=data_dir, cwd=cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    # with no hydra.run.dir the run lands in runs/<name>/<overrides>
    run_dir = _RunDir(os.path.join(cwd, "runs", "default", ",".join(sorted(TINY))))
    assert records(run_dir)[-1]["step"] == 4
    second = medjax("medjax-train", *TINY, "trainer.max_steps=6", data_dir=data_dir, cwd=cwd)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming at step 4" in second.stdout + second.stderr
    run_dir.ending = second.stdout.strip().splitlines()[-3:]
    return run_dir


class _RunDir(str):
    """A run directory's path that also carries the last lines of its run."""

    ending: list[str] = []


def test_run_directory_contents(run_dir):
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "figures/curves.png",
                 "figures/validation_step_000006_confusion.png",
                 "figures/validation_step_000006_roc.png"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(run_dir, "tensorboard")))
    steps = sorted(int(d) for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.isdigit())
    assert steps[-1] == 6
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"))
    stored = checkpoints.config(6)  # the resolved config travels with the state
    checkpoints.close()
    assert stored["trainer"]["max_steps"] == 6 and stored["model"]["_target_"].endswith("cnn_tiny")
    log = records(run_dir)
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    validation = [r for r in log if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4, 6]
    for record in validation:
        assert {"loss", "accuracy", "auroc", "sensitivity", "specificity",
                "balanced_accuracy"} <= set(record)
        assert record["num_examples"] == 20
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["final"]["validation"]["step"] == 6
    assert summary["best"]["auroc"] == max(r["auroc"] for r in validation)


def test_a_run_ends_by_naming_its_best_checkpoint_and_how_to_evaluate_it(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    relative = os.path.join("runs", "default", ",".join(sorted(TINY)))  # from its cwd
    best = summary["best_checkpoint_step"]
    assert run_dir.ending == [
        f"medjax: run directory {relative}",
        f"medjax: best checkpoint step {best} (auroc={summary['best']['auroc']:.4f} "
        "on validation)",
        f"medjax: evaluate it with: medjax-eval run_dir={relative}",
    ]


def test_eval_writes_eval_json(run_dir, data_dir, tmp_path):
    # the command the run printed, from the directory it ran in
    command = run_dir.ending[-1].split("evaluate it with: ", 1)[1].split()
    cwd = run_dir[: -len(command[1].split("=", 1)[1])]
    result = medjax(*command, "split=test", data_dir=data_dir, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "eval.json")) as f:
        evaluation = json.load(f)
    assert evaluation["split"] == "test"
    assert evaluation["metrics"]["num_examples"] == 12
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert evaluation["step"] == json.load(f)["best_checkpoint_step"]


def test_predict_refuses_a_task_that_writes_no_files(run_dir, data_dir, tmp_path):
    result = medjax("medjax-predict", f"run_dir={run_dir}", f"input={tmp_path}/a.png",
                    f"output={tmp_path}/b.png", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"medjax-predict: error: run_dir={run_dir}: this run's task "
        "(ClassificationTask) writes no prediction files"
    )


def test_sweep_runs_every_value(data_dir, tmp_path):
    result = medjax(
        "medjax-train", "-m", *TINY, "trainer.max_steps=2", "optim.lr=1e-3,1e-2",
        f"hydra.sweep.dir={tmp_path}/sweep", data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(os.listdir(tmp_path / "sweep"))
    lrs = sorted(d for d in runs if "optim.lr=" in d)
    assert len(lrs) == 2
    for d in lrs:
        assert os.path.isfile(tmp_path / "sweep" / d / "summary.json")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.name=rmsprop", "optim.name: expected one of"),
        ("data.batch_size=6", "data.batch_size=6 must be a positive multiple of the 4 devices"),
        ("trainer.eval_every=0", "trainer.eval_every: expected a positive integer"),
        ("data.window_width=-5", "data.window_width: expected > 0"),
    ],
)
def test_bad_values_fail_with_one_clear_line(override, message, data_dir, tmp_path):
    result = medjax("medjax-train", *TINY, override, f"hydra.run.dir={tmp_path}/run",
                    data_dir=data_dir, cwd=tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("medjax-train: error:") and message in last_line
    assert "parameters on" not in result.stdout + result.stderr  # nothing compiled
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_short_run_fits_the_default_warmup_and_says_so(data_dir, tmp_path):
    # the default optimizer warms up over 100 steps: more than the 6 of this run
    result = medjax("medjax-train", "model=cnn_tiny", "data=phantoms_tiny",
                    "trainer=smoke", "trainer.max_steps=6",
                    f"hydra.run.dir={tmp_path}/run", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("optim.warmup_steps=100 does not fit trainer.max_steps=6: "
                        "warming up over 3 steps instead") == 1
    assert records(tmp_path / "run")[-1]["step"] == 6


def test_a_task_composed_with_data_it_cannot_read_fails_in_one_line(data_dir, tmp_path):
    result = medjax("medjax-train", "task=segmentation", "data=breast_cancer",
                    f"hydra.run.dir={tmp_path}/run", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        "medjax-train: error: task=segmentation needs an image field 'image'; "
        "data=breast_cancer has no field 'image' (its fields: features 'features', "
        "class_label 'label')"
    )
    assert "parameters on" not in result.stdout + result.stderr  # nothing compiled
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_signal_saves_the_current_step_and_the_run_resumes(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    command = [os.path.join(BIN, "medjax-train"), *TINY, "trainer.max_steps=5000",
               "trainer.checkpoint_every=1000", "trainer.eval_every=1000",
               f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "MEDJAX_DATA": data_dir}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(run_dir / "metrics.jsonl") and len(records(run_dir)) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-3000:]
    match = re.search(r"stopped by SIGTERM; saved step (\d+)", output)
    assert match, output[-3000:]
    stopped = int(match.group(1))
    assert 3 <= stopped < 1000  # not a scheduled checkpoint: saved because of the signal
    checkpoints = Checkpoints(str(run_dir / "checkpoints"))
    assert checkpoints.latest_step() == stopped
    checkpoints.close()
    assert (run_dir / "run.lock").read_text() == ""  # released: no stale owner left
    resumed = subprocess.run(command[:-4] + [f"trainer.max_steps={stopped + 2}", command[-1]],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {stopped}" in resumed.stdout + resumed.stderr
    steps = [r["step"] for r in records(run_dir) if r["split"] == "train"]
    assert steps == list(range(1, stopped + 3))



def test_resuming_with_another_learning_rate_is_refused_and_changes_nothing(
    run_dir, data_dir, tmp_path
):
    with open(os.path.join(run_dir, "config.yaml"), "rb") as f:
        stored = f.read()
    result = medjax("medjax-train", *TINY, "optim.lr=0.01",
                    f"hydra.run.dir='{run_dir}'", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"medjax-train: error: {run_dir}: holds a run trained with "
                           "another configuration")
    assert "(optim.lr: 0.001 -> 0.01)" in line and "Traceback" not in result.stderr
    assert "parameters on" not in result.stdout + result.stderr  # nothing compiled
    with open(os.path.join(run_dir, "config.yaml"), "rb") as f:
        assert f.read() == stored
    assert records(run_dir)[-1]["step"] == 6


def test_a_second_process_in_a_run_directory_in_use_is_refused(data_dir, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from medjax.engine import run_lock; "
         "run_lock.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(300)",
         str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = medjax("medjax-train", *TINY, f"hydra.run.dir={tmp_path}/run",
                        data_dir=data_dir, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"medjax-train: error: {tmp_path}/run: in use by another "
                           f"medjax-train (pid {holder.pid} on host ")
    assert not os.path.exists(tmp_path / "run" / "config.yaml")

def _saved_arrays(run_dir, step):
    import orbax.checkpoint as ocp

    path = os.path.join(run_dir, "checkpoints", str(step), "state")
    return ocp.PyTreeCheckpointer().restore(path)


def test_feature_extractor_transfer_keeps_the_backbone(run_dir, data_dir, tmp_path):
    import jax
    import numpy as np

    with open(os.path.join(run_dir, "summary.json")) as f:
        source_step = json.load(f)["best_checkpoint_step"]
    target = tmp_path / "transfer"
    result = medjax(
        "medjax-train", *TINY, "transfer.mode=feature_extractor",
        f"transfer.checkpoint='{run_dir}'", f"hydra.run.dir={target}",
        data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "medjax: transfer from" in result.stdout
    with open(target / "transfer.json") as f:
        report = json.load(f)
    assert report["step"] == source_step and not report["mismatched"]
    assert any(p.startswith("params/backbone/") for p in report["loaded"])
    assert all(p.startswith("params/head/") for p in report["untouched"])
    source, trained = _saved_arrays(run_dir, source_step), _saved_arrays(target, 4)
    for collection in ("params", "batch_stats"):
        same = jax.tree.map(np.array_equal, source[collection]["backbone"],
                            trained[collection]["backbone"])
        assert all(jax.tree.leaves(same)), collection  # frozen: bit-identical
    assert not np.array_equal(source["params"]["head"]["kernel"],
                              trained["params"]["head"]["kernel"])


def test_medmnist_experiment_trains_by_epochs_and_evaluates(data_dir, tmp_path):
    import numpy as np

    from tests.data.datasets.medmnist.files import write_medmnist_npz

    counts = {"train": 16, "val": 8, "test": 12}
    arrays = write_medmnist_npz(tmp_path / "npz", "pneumoniamnist", counts=counts)
    run_dir = tmp_path / "run"
    common = [f"data.manual_dir={tmp_path / 'npz'}", f"data.data_dir={tmp_path / 'tfds'}"]
    result = medjax(
        "medjax-train", "experiment=medmnist_resnet18", "data.flag=pneumoniamnist",
        "model=resnet_tiny", "data.batch_size=8", "data.eval_batch_size=4",
        "trainer.max_epochs=3", *common, f"hydra.run.dir={run_dir}",
        data_dir=data_dir, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = records(run_dir)
    # 16 training images in batches of 8: 2 steps an epoch, validated every epoch
    assert [r["step"] for r in log if r["split"] == "validation"] == [2, 4, 6]
    with open(run_dir / "config.yaml") as f:
        config = f.read()
    assert "num_classes: 2" in config and "max_steps: 6" in config
    evaluation = medjax("medjax-eval", f"run_dir={run_dir}", "split=test",
                        data_dir=data_dir, cwd=tmp_path)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    with open(run_dir / "eval.json") as f:
        metrics = json.load(f)["metrics"]
    assert metrics["num_examples"] == 12 == len(arrays["test_labels"])
    assert 0 <= metrics["auroc"] <= 1 and "accuracy" in metrics
    assert np.isfinite(metrics["loss"])


def test_medmnist_missing_files_fail_with_one_line(data_dir, tmp_path):
    result = medjax("medjax-train", "experiment=medmnist_resnet18", "data.flag=dermamnist",
                    "data.size=64", f"data.manual_dir={tmp_path / 'empty'}",
                    data_dir=data_dir, cwd=tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("medjax-train: error:")
    assert "dermamnist_64.npz" in last_line and str(tmp_path / "empty") in last_line
    unknown = medjax("medjax-train", "experiment=medmnist_resnet18", "data.flag=foomnist",
                     data_dir=data_dir, cwd=tmp_path)
    last_line = unknown.stderr.strip().splitlines()[-1]
    assert last_line.startswith("medjax-train: error: data.flag='foomnist': expected one of")
