"""Checkpoint ranking with NaN metrics, and damaged or half-written checkpoints."""

import glob
import logging
import math
import os
import shutil

import flax.struct
import jax.numpy as jnp
import pytest

from medjax.engine.checkpoint import Checkpoints
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.loop import _best
from medjax.errors import RunDirectoryError

NAN = float("nan")
SIZE = 50_000  # large enough for Orbax to write the array to its own data file


class TinyState(flax.struct.PyTreeNode):
    step: jnp.ndarray
    params: dict


def state_at(step: int) -> TinyState:
    params = {"w": jnp.full((SIZE,), float(step))}
    return TinyState(step=jnp.asarray(step), params=params)


TEMPLATE = state_at(0)


def save_run(run_dir, values, *, metric="auroc", mode="max", keep_last=2):
    """Saves ``{step: metric value}`` like the loop does; returns the metrics.jsonl
    records the loop would have written (NaN written as null)."""
    checkpoints = Checkpoints(
        os.path.join(run_dir, "checkpoints"), keep_last=keep_last,
        best_metric=metric, best_mode=mode,
    )
    records = []
    for step, value in values.items():
        metrics = {metric: value, "loss": 1.0}
        checkpoints.save(state_at(step), {"seed": 0}, metrics=metrics)
        records.append({
            "step": step, "split": "validation",
            metric: None if math.isnan(value) else value,
        })
    checkpoints.wait()
    checkpoints.close()
    return records


def restored_step(run_dir, checkpoint, **kwargs) -> int:
    state, step = restore_checkpoint(TEMPLATE, str(run_dir), checkpoint, **kwargs)
    assert float(state.params["w"][0]) == step  # the arrays are that step's
    return step


# -- ranking -------------------------------------------------------------------


@pytest.mark.parametrize("mode, values", [
    ("max", {2: 0.7, 4: NAN, 6: 0.6, 8: 0.5}),  # the AUROC sequence
    ("min", {2: 0.3, 4: NAN, 6: 0.4, 8: 0.5}),
    ("min", {2: 0.3, 4: -math.inf, 6: 0.4, 8: 0.5}),  # -inf is no best loss either
])
def test_a_nan_metric_never_displaces_the_best_checkpoint(tmp_path, mode, values):
    records = save_run(tmp_path, values, mode=mode)
    checkpoints = Checkpoints(
        str(tmp_path / "checkpoints"), best_metric="auroc", best_mode=mode
    )
    assert checkpoints.steps() == [2, 6, 8]  # the best (2) and the latest two
    assert checkpoints.best_step() == 2
    best = _best(records, checkpoints.ranked_best_step(), "auroc")  # summary.json's
    checkpoints.close()
    assert best["step"] == 2 and best["auroc"] == values[2]
    assert restored_step(tmp_path, "best", best_metric="auroc", best_mode=mode) == 2


def test_with_no_finite_metric_best_is_the_latest_and_the_summary_names_none(tmp_path):
    records = save_run(tmp_path, {2: NAN, 4: NAN, 6: NAN})
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"), best_metric="auroc")
    assert checkpoints.ranked_best_step() is None
    assert checkpoints.best_step() == 6
    checkpoints.close()
    assert _best(records, None, "auroc") is None
    assert restored_step(tmp_path, "best", best_metric="auroc") == 6


def test_equal_best_values_name_the_step_orbax_keeps(tmp_path):
    records = save_run(tmp_path, {2: 0.7, 4: 0.7, 6: 0.1, 8: 0.1, 10: 0.1}, keep_last=1)
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"), best_metric="auroc")
    kept, best = checkpoints.steps(), checkpoints.best_step()
    checkpoints.close()
    assert kept == [4, 10] and best == 4  # a stable sort keeps the later of equals
    assert _best(records, best, "auroc")["step"] == 4


# -- half-written and damaged checkpoints --------------------------------------


def test_a_save_cut_short_is_never_the_latest(tmp_path):
    save_run(tmp_path, {2: 0.5, 4: 0.6})
    directory = tmp_path / "checkpoints"
    # What a kill -9 during Orbax's save leaves (checked with a 320 MB save):
    # the step under its temporary name, renamed to "4" only once complete.
    os.rename(directory / "4", directory / "4.orbax-checkpoint-tmp")
    checkpoints = Checkpoints(str(directory), best_metric="auroc")
    assert checkpoints.latest_step() == 2 and checkpoints.best_step() == 2
    state, step = checkpoints.restore_for_resume(TEMPLATE)
    assert step == 2 and float(state.params["w"][0]) == 2.0
    checkpoints.save(state_at(4), {"seed": 0}, metrics={"auroc": 0.6})  # saved again
    checkpoints.wait()
    assert checkpoints.steps() == [2, 4]
    checkpoints.close()
    assert sorted(os.listdir(directory)) == ["2", "4"]


def _truncate_data(step_dir):
    files = glob.glob(f"{step_dir}/state/**/d/*", recursive=True)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _delete_data(step_dir):
    for path in glob.glob(f"{step_dir}/state/**/d/*", recursive=True):
        os.remove(path)


def _garble(path):
    with open(path, "wb") as f:
        f.write(b"\x00not a checkpoint{")


DAMAGE = {
    "truncated arrays": _truncate_data,
    "deleted arrays": _delete_data,
    "garbage manifest": lambda d: _garble(f"{d}/state/manifest.ocdbt"),
    "garbage tree metadata": lambda d: _garble(f"{d}/state/_METADATA"),
    "deleted state": lambda d: shutil.rmtree(f"{d}/state"),
    "garbage metrics": lambda d: _garble(f"{d}/metrics/metrics"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resuming_falls_back_past_an_unreadable_latest_checkpoint(
    tmp_path, damage, caplog
):
    save_run(tmp_path, {2: 0.5, 4: 0.6}, keep_last=3)
    directory = tmp_path / "checkpoints"
    DAMAGE[damage](directory / "4")
    checkpoints = Checkpoints(
        str(directory), best_metric="auroc", set_aside_unreadable=True
    )
    with caplog.at_level(logging.WARNING, logger="medjax.engine.checkpoint"):
        state, step = checkpoints.restore_for_resume(TEMPLATE)
    assert step == 2 and float(state.params["w"][0]) == 2.0
    # (asyncio may also log the abandoned reads of the damaged step, when it
    # collects them: not ours to count)
    (warning,) = [r.getMessage() for r in caplog.records
                  if r.name == "medjax.engine.checkpoint"]
    assert "checkpoint step 4" in warning and "from step 2" in warning
    assert checkpoints.steps() == [2]
    # Kept for a look, out of Orbax's sight.
    assert (directory / "4.unreadable").is_dir()
    # The resumed run saves step 4 again.
    checkpoints.save(state_at(4), {"seed": 0}, metrics={"auroc": 0.6})
    checkpoints.wait()
    assert checkpoints.steps() == [2, 4]
    assert float(checkpoints.restore(TEMPLATE, 4).params["w"][0]) == 4.0
    checkpoints.close()


@pytest.mark.parametrize("damage", ["truncated arrays", "garbage metrics"])
def test_no_readable_checkpoint_is_one_error_and_nothing_is_moved(tmp_path, damage):
    save_run(tmp_path, {2: 0.5, 4: 0.6}, keep_last=3)
    directory = tmp_path / "checkpoints"
    for step in (2, 4):
        DAMAGE[damage](directory / str(step))
    with pytest.raises(RunDirectoryError) as error:
        checkpoints = Checkpoints(
            str(directory), best_metric="auroc", set_aside_unreadable=True
        )
        checkpoints.restore_for_resume(TEMPLATE)
    message = str(error.value)
    assert "\n" not in message and str(directory) in message and "4" in message
    # A rerun fails again: it never starts afresh over them.
    assert sorted(os.listdir(directory)) == ["2", "4"]


def test_evaluating_an_unreadable_checkpoint_fails_instead_of_falling_back(tmp_path):
    save_run(tmp_path, {2: 0.5, 4: 0.6, 6: 0.1}, keep_last=3)
    _truncate_data(tmp_path / "checkpoints" / "4")
    for asked in ("best", "4"):
        with pytest.raises(RunDirectoryError) as error:
            restore_checkpoint(TEMPLATE, str(tmp_path), asked, best_metric="auroc")
        message = str(error.value)
        assert message.startswith(f"checkpoint={asked}: ") and "\n" not in message
        assert "checkpoints/4: unreadable checkpoint (" in message
        assert "other saved steps: [2, 6]" in message
    assert restored_step(tmp_path, "latest", best_metric="auroc") == 6


def test_damaged_metrics_are_named_when_not_resuming(tmp_path):
    save_run(tmp_path, {2: 0.5, 4: 0.6})
    _garble(tmp_path / "checkpoints" / "4" / "metrics" / "metrics")
    expected = r"checkpoints/4: unreadable checkpoint \(metrics: Expecting value"
    with pytest.raises(RunDirectoryError, match=expected):
        restore_checkpoint(TEMPLATE, str(tmp_path), "latest", best_metric="auroc")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
