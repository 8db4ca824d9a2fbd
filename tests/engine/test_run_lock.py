"""One process per run directory: a live holder refuses others, a dead one's
lock is taken over."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from medjax.engine import run_lock
from medjax.errors import RunDirectoryError

HOLDER = textwrap.dedent("""
    import sys, time
    from medjax.engine import run_lock
    run_lock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """Starts a process that takes ``tmp_path``'s lock and sleeps."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
        text=True, env=env,
    )
    assert process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_live_holder_makes_a_second_process_refuse_naming_it(tmp_path, holder):
    with pytest.raises(RunDirectoryError) as error:
        run_lock.acquire(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message
    assert str(tmp_path / "run.lock") not in run_lock._held


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(
    tmp_path, holder, caplog
):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="medjax.engine.run_lock"):
        with run_lock.holding(str(tmp_path)):
            with open(tmp_path / "run.lock") as f:
                assert json.load(f)["pid"] == os.getpid()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "stale lock" in warning and f"pid {holder.pid}" in warning


def test_holding_is_reentrant_and_released_by_the_outermost_holder(tmp_path):
    directory = str(tmp_path)
    with run_lock.holding(directory):
        with run_lock.holding(directory):  # medjax-train, then engine.loop.train
            pass
        assert _locked_elsewhere(directory)  # still held after the inner release
    assert (tmp_path / "run.lock").read_text() == ""  # no stale owner left behind
    assert not _locked_elsewhere(directory)


def test_an_exception_releases_the_lock(tmp_path):
    with pytest.raises(KeyError):
        with run_lock.holding(str(tmp_path)):
            raise KeyError("a bug")
    assert not _locked_elsewhere(str(tmp_path))


def test_the_decorated_function_runs_holding_its_run_dir(tmp_path):
    @run_lock.holds_run_dir
    def train(*, run_dir):
        return _locked_elsewhere(run_dir)

    assert train(run_dir=str(tmp_path / "new")) is True
    assert not _locked_elsewhere(str(tmp_path / "new"))


def _locked_elsewhere(run_dir: str) -> bool:
    """Whether another process fails to take ``run_dir``'s lock."""
    probe = (
        "import sys; from medjax.engine import run_lock; run_lock.acquire(sys.argv[1])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, run_dir], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
    )
    return result.returncode != 0 and "in use by another medjax-train" in result.stderr
