"""Evaluation: every example of a split exactly once, from a training state or
a saved checkpoint of a run directory."""

import os
from typing import Any, Sequence

import jax
import numpy as np

from medjax.data import pipeline
from medjax.data.dataset import Dataset
from medjax.engine import sharding
from medjax.engine.checkpoint import Checkpoints
from medjax.engine.state import TrainState, init_state
from medjax.engine.step import compile_steps
from medjax.errors import ConfigError, RunDirectoryError


def configured(task, data: Dataset):
    """``task`` configured for ``data`` (``task.configure``), unless it already
    is (its ``schema`` is filled): ``build_run`` configures with the config's
    names for messages; a task built in Python is configured here."""
    return task if task.schema else task.configure(data)


def evaluate(
    eval_fn, state: TrainState, data: Dataset, split: str, task, mesh,
    figure_path: str | None = None,
) -> dict:
    """Metrics over every example of ``split`` exactly once: means of per-example
    metrics, plus the task's split-level metrics, plus ``num_examples``. The
    task's ``draw_cases`` draws a few cases to ``figure_path`` (when given)."""
    data_sharding = sharding.batch_sharding(mesh)
    per_example, host_outputs = [], []
    batches = pipeline.eval_batches(
        data.source(split), batch_size=data.eval_batch_size, convert=data.convert,
        keys=task.batch_keys, num_threads=data.num_threads,
    )
    for batch in batches:
        batch = pipeline.to_devices(batch, data_sharding)
        metrics, outputs = eval_fn(state, batch)
        metrics, outputs, valid = sharding.to_host((metrics, outputs, batch["valid"]))
        per_example.append({k: v[valid] for k, v in metrics.items()})
        host_outputs.append({k: v[valid] for k, v in outputs.items()})

    def concat(parts):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    per_example, host_outputs = concat(per_example), concat(host_outputs)
    result = {k: float(v.mean()) for k, v in per_example.items()}
    result.update(task.split_metrics(host_outputs))
    result["num_examples"] = len(next(iter(per_example.values())))
    if figure_path and jax.process_index() == 0:
        step = int(jax.device_get(state.step))
        task.draw_cases(host_outputs, figure_path, title=f"{split}, step {step}")
    return result


def restore_checkpoint(
    state: TrainState, run_dir: str, checkpoint: str | int = "best", *,
    best_metric: str | None = None, best_mode: str = "max",
) -> tuple[TrainState, int]:
    """``state`` (a template of the right structure) restored from checkpoint
    ``best`` (by ``best_metric``; the latest when no saved step has a finite
    value of it), ``latest`` or a step number of ``run_dir``.

    The checkpoint asked for is the one evaluated: if it cannot be read this
    fails rather than fall back to another step (resuming training falls back;
    an evaluation must say which step its numbers are from).

    Raises:
        ConfigError: ``checkpoint`` names a step that is not saved.
        RunDirectoryError: no checkpoints, or the one asked for is unreadable.
    """
    checkpoints = Checkpoints(
        os.path.join(run_dir, "checkpoints"), best_metric=best_metric,
        best_mode=best_mode,
    )
    try:
        saved = checkpoints.steps()
        if checkpoint == "best":
            step = checkpoints.best_step()
        elif checkpoint == "latest":
            step = checkpoints.latest_step()
        else:
            step = int(checkpoint)
            if step not in saved:
                raise ConfigError(
                    f"checkpoint={step}: not saved; saved steps are {saved}"
                )
        if step is None:
            raise RunDirectoryError(f"run_dir={run_dir}: no checkpoints to restore")
        try:
            state = checkpoints.restore(state, step)
        except RunDirectoryError as error:
            others = [s for s in saved if s != step]
            raise RunDirectoryError(
                f"checkpoint={checkpoint}: {error}"
                + (f"; other saved steps: {others}" if others else "")
            ) from error
    finally:
        checkpoints.close()
    return state, step


def evaluate_checkpoint(
    *,
    task,
    model,
    tx,
    data: Dataset,
    run_dir: str,
    split: str = "test",
    checkpoint: str | int = "best",
    seed: int = 0,
    best_metric: str | None = None,
    best_mode: str = "max",
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, Any]:
    """Evaluates a saved checkpoint of ``run_dir`` on ``split``.

    Args:
        checkpoint: ``best`` (by ``best_metric``), ``latest``, or a step number.

    Returns:
        ``{"split", "step", "checkpoint", "metrics"}``.
    """
    task = configured(task, data)
    mesh = sharding.data_mesh(devices)
    sharding.check_batch_size(data.eval_batch_size, mesh, "data.eval_batch_size")
    data.source(split)  # fails early on an unknown split
    state, step = restore_checkpoint(
        init_state(model, tx, data, task, mesh, seed), run_dir, checkpoint,
        best_metric=best_metric, best_mode=best_mode,
    )
    _, eval_fn = compile_steps(task, mesh)
    figure = os.path.join(run_dir, "figures", f"{split}_step_{step:06d}.png")
    metrics = evaluate(eval_fn, state, data, split, task, mesh, figure_path=figure)
    return {
        "split": split, "step": step, "checkpoint": str(checkpoint), "metrics": metrics
    }
