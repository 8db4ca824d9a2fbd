"""A diverging run through medjax-train: one line, a non-zero exit, nothing
poisoned saved."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

BIN = os.path.dirname(sys.executable)
# On the tiny preset BatchNorm keeps optim.lr=1e6 finite; 1e30 overflows at step 2.
DIVERGING = ["model=cnn_tiny", "data=phantoms_tiny", "trainer=smoke", "optim=sgd",
             "optim.lr=1e30"]


def test_a_diverging_run_stops_with_one_line_and_no_traceback(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [os.path.join(BIN, "medjax-train"), *DIVERGING, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, "MEDJAX_DATA": data_dir},
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "medjax-train: error: step 2: the training gradient norm is not finite (NaN "
        "or inf); stopped without saving it: no checkpoint was saved; try a lower "
        "optim.lr, gradient clipping (e.g. optim.grad_clip_norm=1.0) or higher precision"
    )
    assert not os.path.exists(run_dir / "checkpoints" / "2")
    assert not os.path.exists(run_dir / "summary.json")
