"""``medjax-train`` as 2 processes (jax.distributed on 127.0.0.1, gloo
collectives, 2 forced CPU devices each) against 1 process with 4 devices."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from medjax.engine.checkpoint import Checkpoints

TINY = ["model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=adam"]
BIN = os.path.join(os.path.dirname(sys.executable), "medjax-train")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(data_dir, devices, **extra):
    env = {**os.environ, "MEDJAX_DATA": data_dir, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}
    for name in ("MEDJAX_DISTRIBUTED", "MEDJAX_COORDINATOR_ADDRESS",
                 "MEDJAX_NUM_PROCESSES", "MEDJAX_PROCESS_ID"):
        if name not in extra:
            env.pop(name, None)
    return env


def launch(args, env, cwd, log):
    return subprocess.Popen([BIN, *args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def two_processes(args, data_dir, cwd, *, by_environment: bool):
    """Starts processes 0 and 1 of one run: options from MEDJAX_* variables or
    from ``distributed.*`` on the command line. Returns them and their logs."""
    address = f"127.0.0.1:{free_port()}"
    processes, logs = [], []
    for rank in (0, 1):
        log = open(os.path.join(cwd, f"process{rank}.log"), "w+")  # noqa: SIM115 (closed by finish)
        if by_environment:
            env = environment(data_dir, 2, MEDJAX_DISTRIBUTED="1",
                              MEDJAX_COORDINATOR_ADDRESS=address,
                              MEDJAX_NUM_PROCESSES="2", MEDJAX_PROCESS_ID=str(rank))
            options = []
        else:
            env = environment(data_dir, 2)
            options = ["distributed.enabled=true",
                       f"distributed.coordinator_address={address}",
                       "distributed.num_processes=2", f"distributed.process_id={rank}"]
        processes.append(launch([*args, *options], env, cwd, log))
        logs.append(log)
    return processes, logs


def finish(processes, logs, timeout=300):
    texts = []
    for process, log in zip(processes, logs):
        try:
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
        log.seek(0)
        texts.append(log.read())
        log.close()
    return [p.returncode for p in processes], texts


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def single(args, data_dir, cwd):
    result = subprocess.run([BIN, *args], cwd=cwd, env=environment(data_dir, 4), check=False,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def assert_same_records(got, expected, rtol=1e-5):
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in expected]
    for a, b in zip(got, expected):
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=rtol, abs=1e-6), (a["step"], key)


def test_two_processes_train_as_one_with_four_devices(data_dir, tmp_path):
    one = str(tmp_path / "one")
    single([*TINY, "trainer.max_steps=6", f"hydra.run.dir={one}"], data_dir, tmp_path)
    two = str(tmp_path / "two")
    processes, logs = two_processes([*TINY, "trainer.max_steps=6", f"hydra.run.dir={two}"],
                                    data_dir, tmp_path, by_environment=True)
    codes, texts = finish(processes, logs)
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    for rank, text in enumerate(texts):
        # each process drove 2 of the 4 devices of one job
        assert f"medjax: process {rank} of 2, 2 local of 4 devices" in text
    assert "medjax: run directory" in texts[0] and "medjax: run directory" not in texts[1]
    # the same losses and validation metrics, each record written once
    got, expected = records(two), records(one)
    assert [r["step"] for r in got if r["split"] == "validation"] == [2, 4, 6]
    assert_same_records(got, expected)
    assert got[-1]["num_examples"] == 20
    assert len(os.listdir(os.path.join(two, "tensorboard"))) == 1  # one writer
    for name in ("config.yaml", "summary.json", "figures/curves.png"):
        assert os.path.isfile(os.path.join(two, name)), name
    checkpoints = Checkpoints(os.path.join(two, "checkpoints"))
    assert checkpoints.steps() == [4, 6]
    checkpoints.close()


def test_a_signal_to_one_process_stops_both_and_one_process_resumes(data_dir, tmp_path):
    run = [*TINY, "trainer.max_steps=100000", "trainer.eval_every=100000",
           "trainer.checkpoint_every=100000", "trainer.log_every=1"]
    two = str(tmp_path / "two")
    processes, logs = two_processes([*run, f"hydra.run.dir={two}"], data_dir, tmp_path,
                                    by_environment=False)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and processes[0].poll() is None:
        path = os.path.join(two, "metrics.jsonl")
        if os.path.exists(path) and len(records(two)) >= 5:
            break
        time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)  # process 1 only
    codes, texts = finish(processes, logs)
    assert codes == [130, 130], texts[0][-3000:] + texts[1][-3000:]
    stopped = records(two)[-1]["step"]
    assert 5 <= stopped < 100000
    assert f"stopped by a signal to another process; saved step {stopped}" in texts[0]
    checkpoints = Checkpoints(os.path.join(two, "checkpoints"))
    assert checkpoints.steps() == [stopped]  # one checkpoint, at the step both stopped
    checkpoints.close()
    # one process with 4 devices resumes it and trains what an uninterrupted run trains
    end = [f"trainer.max_steps={stopped + 3}"]
    resumed = single([*run, *end, f"hydra.run.dir={two}"], data_dir, tmp_path)
    assert f"resuming at step {stopped}" in resumed.stdout + resumed.stderr
    straight = str(tmp_path / "straight")
    single([*run, *end, f"hydra.run.dir={straight}"], data_dir, tmp_path)
    # gloo's cross-process sums and the in-process ones differ in the last bits
    assert_same_records(records(two), records(straight), rtol=1e-4)
