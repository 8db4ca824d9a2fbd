"""Stop/resume soak: one tiny run interrupted by SIGTERM at pseudo-random steps
and once by SIGKILL while Orbax is writing a checkpoint, resumed each time with
the same command, ends with the parameters of an uninterrupted run of that
command, array for array, and a metrics.jsonl holding each step's records once.

Also here, because it needs a trained run: medjax-eval reports a failed write
of eval.json in one line and keeps the previous file."""

import errno
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medjax.engine import reporting
from tests.cli.test_user_errors import absl_writes_here

pytestmark = pytest.mark.slow

MAX_STEPS = 20
COMMAND = [
    "model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam",
    f"trainer.max_steps={MAX_STEPS}", "trainer.checkpoint_every=3",
    "trainer.eval_every=10", "trainer.log_every=1",
]  # fmt: skip
BIN = os.path.dirname(sys.executable)
ORBAX_TEMPORARY = ".orbax-checkpoint-tmp"  # Orbax's suffix for a save in progress


@pytest.fixture(scope="module")
def soak(data_dir, tmp_path_factory):
    """Where the runs go, and how to start one there."""
    root = tmp_path_factory.mktemp("soak")
    cache = root / "jax_cache"  # later processes load the compiled steps

    def start(run_dir, log_name):
        command = [os.path.join(BIN, "medjax-train"), *COMMAND,
                   f"compilation_cache={cache}", f"hydra.run.dir={run_dir}"]  # fmt: skip
        with open(root / log_name, "w") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                command, cwd=root, env={**os.environ, "MEDJAX_DATA": data_dir},
                stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        process.log_path = root / log_name
        return process

    start.root = root
    return start


@pytest.fixture(scope="module")
def reference_run(soak):
    run_dir = soak.root / "uninterrupted"
    process = soak(run_dir, "uninterrupted.log")
    assert process.wait(timeout=600) == 0, process.log_path.read_text()[-3000:]
    return run_dir


def _train_steps(run_dir) -> list[int]:
    # read_metrics drops a last line the running process is writing right now
    path = os.path.join(run_dir, "metrics.jsonl")
    return [r["step"] for r in reporting.read_metrics(path) if r["split"] == "train"]


def _wait_for(condition, process, timeout=300.0, pause=0.01) -> bool:
    """Polls ``condition`` until it holds (True) or ``process`` ends (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(pause)
    raise AssertionError("the run neither reached the step nor ended")


def _saving(run_dir) -> bool:
    directory = os.path.join(run_dir, "checkpoints")
    return os.path.isdir(directory) and any(
        ORBAX_TEMPORARY in name for name in os.listdir(directory)
    )


def _checkpoint_steps(run_dir) -> list[int]:
    """The complete checkpoints' steps (a save in progress has another name)."""
    names = os.listdir(os.path.join(run_dir, "checkpoints"))
    return sorted(int(name) for name in names if name.isdigit())


def _final_state(run_dir):
    import orbax.checkpoint as ocp

    path = os.path.join(run_dir, "checkpoints", str(MAX_STEPS), "state")
    return ocp.PyTreeCheckpointer().restore(path)


def test_interrupted_runs_end_where_an_uninterrupted_one_does(soak, reference_run):
    import jax

    run_dir = soak.root / "interrupted"
    rng = random.Random(19)
    term_steps = sorted(rng.sample(range(2, MAX_STEPS - 4), 3))
    kill_step = rng.randrange(term_steps[1] + 1, MAX_STEPS - 2)
    plan = [(signal.SIGTERM, term_steps[0]), (signal.SIGTERM, term_steps[1]),
            (signal.SIGKILL, kill_step), (signal.SIGTERM, term_steps[2])]  # fmt: skip
    plan.sort(key=lambda item: item[1])
    stopped_at, killed_while_saving, logged_past_the_checkpoint = [], False, 0
    torn_after = None
    for number, (signum, target) in enumerate(plan):
        # Records the previous segments left: only a later step shows that this
        # process is training (signalled before, it would die without saving).
        logged = (_train_steps(run_dir) or [0])[-1] if run_dir.exists() else 0
        target = max(target, logged + 1)
        process = soak(run_dir, f"segment{number}.log")

        def reached(target=target):
            steps = _train_steps(run_dir)
            return bool(steps) and steps[-1] >= target

        assert _wait_for(reached, process), "ended before the step: make it longer"
        if signum == signal.SIGKILL:
            # Orbax writes a checkpoint under a temporary name and renames it when
            # complete: kill -9 while that name exists.
            killed_while_saving = _wait_for(
                lambda: _saving(run_dir), process, pause=0.002
            )
            process.kill()
            process.wait(timeout=60)
            stopped_at.append(("SIGKILL", _checkpoint_steps(run_dir)[-1]))
            logged_past_the_checkpoint = _train_steps(run_dir)[-1] - stopped_at[-1][1]
            # A kill lands inside the one write of a line only rarely: tear the
            # last line as such a kill would, so that case is soaked every time.
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write('{"step": 99, "split": "tr')
            torn_after = number
            continue
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=300)
        output = process.log_path.read_text()
        assert returncode == 130, output[-3000:]  # 0: it ended before the signal
        saved = re.search(r"stopped by SIGTERM; saved step (\d+)", output)
        assert saved, output[-3000:]
        stopped_at.append(("SIGTERM", int(saved.group(1))))
        assert int(saved.group(1)) >= target
    final = soak(run_dir, "final.log")
    assert final.wait(timeout=600) == 0, final.log_path.read_text()[-3000:]
    print(f"stopped at {stopped_at}; SIGKILL during a checkpoint save: "
          f"{killed_while_saving}, {logged_past_the_checkpoint} steps logged "
          "past the last checkpoint")  # fmt: skip
    assert killed_while_saving
    logs = [p.read_text() for p in sorted(soak.root.glob("segment*.log"))[1:]]
    logs.append(final.log_path.read_text())
    resumed_at = [
        int(re.search(r"resuming at step (\d+)", log).group(1)) for log in logs
    ]
    assert "dropped its last line, torn by an interrupted write" in logs[torn_after]
    # SIGTERM: the step it stopped at was saved; SIGKILL: the last checkpoint
    # complete when it died (not the one it cut short).
    assert [step for _, step in stopped_at] == resumed_at

    reference, resumed = _final_state(reference_run), _final_state(run_dir)
    assert jax.tree.structure(resumed) == jax.tree.structure(reference)
    got = dict(jax.tree_util.tree_leaves_with_path(resumed))
    for path, expected in jax.tree_util.tree_leaves_with_path(reference):
        np.testing.assert_array_equal(
            got[path], expected, err_msg=jax.tree_util.keystr(path)
        )

    records = reporting.read_metrics(str(run_dir / "metrics.jsonl"))
    keys = [(r["step"], r["split"]) for r in records]
    assert len(keys) == len(set(keys))  # no step logged twice
    assert [s for s, split in keys if split == "train"] == list(range(1, MAX_STEPS + 1))
    assert [s for s, split in keys if split == "validation"] == [10, 20]
    # the same records, value for value, as the run that was never stopped
    assert records == reporting.read_metrics(str(reference_run / "metrics.jsonl"))


def test_eval_reports_a_failed_write_in_one_line(
    reference_run, data_dir, monkeypatch, capsys
):
    from medjax.cli import eval as eval_cli

    previous = '{"accuracy": 0.5}\n'
    (reference_run / "eval.json").write_text(previous)
    replace = os.replace

    def full_disk_for_eval_json(source, destination):
        if os.path.basename(destination) == "eval.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", full_disk_for_eval_json)
    monkeypatch.setenv("MEDJAX_DATA", data_dir)
    monkeypatch.setattr(sys, "argv", [
        "medjax-eval", f"run_dir={reference_run}", "checkpoint=latest",
        "compilation_cache=null",
    ])  # fmt: skip
    absl_writes_here()  # as test_user_errors does: Hydra's set-up closes handlers
    with pytest.raises(SystemExit) as exited:
        eval_cli.main()
    path = reference_run / "eval.json"
    assert exited.value.code == (
        f"medjax-eval: error: {path}: could not write it (No space left on device); "
        "the previous file is intact"
    )
    assert path.read_text() == previous
    assert not [n for n in os.listdir(reference_run) if n.startswith(".tmp-")]
    assert "Traceback" not in capsys.readouterr().err
