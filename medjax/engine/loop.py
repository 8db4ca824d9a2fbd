"""The training loop: resume, train, evaluate, checkpoint, report.

Everything it writes goes to ``run_dir`` (see README, "The run directory")."""

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from medjax.data import pipeline
from medjax.data import schema as roles
from medjax.data.dataset import Dataset
from medjax.engine import distributed, reporting, sharding
from medjax.engine.checkpoint import Checkpoints
from medjax.engine.evaluate import configured, evaluate
from medjax.engine.nonfinite import NonFiniteGuard, split_means, stop_message
from medjax.engine.run_lock import holds_run_dir
from medjax.engine.state import TrainState, count_params, init_state
from medjax.engine.step import PRECISIONS, compile_steps
from medjax.errors import ConfigError, NonFiniteError
from medjax.runtime import random_key
from medjax.viz.curves import plot_curves

ON_NONFINITE = ("stop", "skip")


def check_trainer_options(
    max_steps: int, eval_every: int, checkpoint_every: int, log_every: int = 20,
    keep_checkpoints: int = 2, best_mode: str = "max", on_nonfinite: str = "stop",
    max_nonfinite: int = 10, precision: str = "fp32", **_: Any,
) -> None:
    """One-line errors for trainer options that cannot work."""
    options = dict(
        max_steps=max_steps, eval_every=eval_every, checkpoint_every=checkpoint_every,
        log_every=log_every, keep_checkpoints=keep_checkpoints,
        max_nonfinite=max_nonfinite,
    )
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"trainer.{name}: expected a positive integer, got {value!r}")
    if best_mode not in ("max", "min"):
        raise ConfigError(f"trainer.best_mode: expected 'max' or 'min', got {best_mode!r}")
    if precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if on_nonfinite not in ON_NONFINITE:
        raise ConfigError(
            f"trainer.on_nonfinite: expected 'stop' or 'skip', got {on_nonfinite!r}"
        )


class StopOnSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's
    pre-emption) set ``requested`` instead of interrupting: the loop finishes the
    step it is in, logs it, saves a checkpoint and returns. A second signal
    interrupts at once. SIGINT is taken even where a shell started the process with
    it ignored (background jobs)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _sample_weights(data: Dataset, task) -> np.ndarray | None:
    """Per-example sampling weights of the training split (None: uniform); a
    class-balanced draw balances the task's ``class_label`` field."""
    if data.sampling == "uniform":
        return None
    labels = roles.keys_of(task.field_roles(), roles.CLASS_LABEL)
    if not labels:
        raise ConfigError(
            f"data.sampling={data.sampling}: balances the task's class_label field; "
            f"{type(task).__name__} reads none ({roles.describe(task.field_roles())})"
        )
    return data.sample_weights(labels[0])


def _best(records, step: int | None, metric: str | None) -> dict | None:
    """The validation record of checkpoint ``step`` (the best one the
    checkpoints keep), if its ``metric`` is a number: what ``summary.json``
    names is then the step ``medjax-eval checkpoint=best`` evaluates."""
    at_step = [
        r for r in records
        if r["split"] == "validation" and r["step"] == step and metric
        and r.get(metric) is not None
    ]
    return at_step[-1] if at_step else None


@holds_run_dir  # one process trains in a run directory at a time
def train(
    *,
    task,
    model,
    tx,
    data: Dataset,
    run_dir: str,
    max_steps: int,
    augment=None,
    eval_every: int,
    checkpoint_every: int,
    log_every: int = 20,
    seed: int = 0,
    keep_checkpoints: int = 2,
    best_metric: str | None = None,
    best_mode: str = "max",
    on_nonfinite: str = "stop",
    max_nonfinite: int = 10,
    precision: str = "fp32",
    config: dict[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    initialize: Callable[[TrainState], TrainState] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Trains until ``max_steps``, resuming from the latest checkpoint in
    ``run_dir/checkpoints`` if there is one. ``task`` is configured for
    ``data`` here unless it already is (``build_run`` configures it).
    ``augment`` (a ``medjax.augment.Augmentation``) augments training batches
    on device, by the roles of the task's prepared batch.
    ``initialize`` changes a fresh state before step 1 (e.g. loads pretrained
    weights; a resumed run restores its own checkpoint instead). Other keyword
    arguments (trainer options read elsewhere, e.g. ``max_epochs``) are ignored.

    A non-finite training step (loss or gradient norm) or validation loss
    stops the run with ``NonFiniteError`` before anything of that step is
    saved (``on_nonfinite="stop"``); ``"skip"`` drops such updates and counts
    them (``nonfinite_steps`` in the train records), stopping after
    ``max_nonfinite`` in a row (``medjax.engine.nonfinite``).
    It holds ``run_dir/run.lock`` throughout (``medjax.engine.run_lock``): a
    second process training in the same directory fails with a
    ``RunDirectoryError`` naming the first. It resumes from the newest readable
    checkpoint (warning about unreadable newer ones, which it sets aside); if
    checkpoints exist but none can be read, it raises ``RunDirectoryError``.
    Returns the summary also written to ``summary.json``."""
    check_trainer_options(
        max_steps, eval_every, checkpoint_every, log_every, keep_checkpoints, best_mode,
        on_nonfinite, max_nonfinite, precision,
    )
    mesh = sharding.data_mesh(devices)
    sharding.check_batch_size(data.batch_size, mesh)
    sharding.check_batch_size(data.eval_batch_size, mesh, "data.eval_batch_size")
    train_source = data.source(data.train_split)
    pipeline.steps_per_epoch(len(train_source), data.batch_size)
    task = configured(task, data)
    sample_weights = _sample_weights(data, task)
    os.makedirs(run_dir, exist_ok=True)

    train_fn, eval_fn = compile_steps(task, mesh, augment, precision=precision)
    state = init_state(model, tx, data, task, mesh, seed)
    step_key = jax.random.fold_in(random_key(seed), 1)
    checkpoints = Checkpoints(
        os.path.join(run_dir, "checkpoints"), keep_last=keep_checkpoints,
        best_metric=best_metric, best_mode=best_mode, set_aside_unreadable=True,
    )
    # The newest readable checkpoint; none readable over existing ones is an
    # error, never a silent fresh start.
    state, start = checkpoints.restore_for_resume(state)
    if not start and initialize is not None:
        state = jax.device_put(initialize(state), sharding.replicated(mesh))
    is_main = distributed.is_main_process()
    # Multi-process: the processes agree at the start of every step whether
    # any of them was signalled, so that all stop after the same step.
    multi_process = jax.process_count() > 1
    log = reporting.MetricsLog(run_dir, resume_step=start, write=is_main)
    config = config or {}
    if is_main and progress:
        tqdm.write(
            f"medjax: {count_params(state.params):,} parameters on {mesh.devices.size} "
            f"device(s) ({jax.default_backend()}); "
            + (f"resuming at step {start}" if start else "starting at step 0")
        )

    data_sharding = sharding.batch_sharding(mesh)
    batches = pipeline.train_batches(
        train_source, batch_size=data.batch_size, seed=seed, start_step=start,
        num_steps=max_steps, convert=data.convert, keys=task.batch_keys,
        num_threads=data.num_threads, sample_weights=sample_weights,
    )
    bar = tqdm(
        total=max_steps, initial=start, desc="train", unit="step",
        disable=not (is_main and progress), dynamic_ncols=True,
    )
    window, window_start, images_per_second = [], time.perf_counter(), math.nan
    guard = NonFiniteGuard(on_nonfinite, max_nonfinite)

    def stop_if(problem: str | None) -> None:
        """Ends a poisoned run: logs the steps checked so far (the window holds
        no others here), lets the saves of good states finish, closes what the
        run opened and raises one line."""
        if problem is None:
            return
        if window:
            _log_train(log, guard.checked_step, window, on_nonfinite == "skip")
        bar.close()
        checkpoints.wait()
        latest = checkpoints.latest_step()
        checkpoints.close()
        log.close()
        raise NonFiniteError(stop_message(problem, latest))

    step, stopping = start, False
    with StopOnSignal() as stop:
        for step in range(start + 1, max_steps + 1):
            if multi_process:
                stopping = distributed.any_process(stop.requested is not None)
            batch = pipeline.to_devices(next(batches), data_sharding)
            state, metrics = train_fn(state, batch, step_key)
            if window:
                # Keep one step in flight, no more: the bar then shows real progress.
                jax.block_until_ready(window[-1])
                stop_if(guard.check(step - 1, window[-1]))
            window.append(metrics)
            if not multi_process:
                stopping = stop.requested is not None
            last = step == max_steps or stopping
            logged = step % log_every == 0 or last
            if logged or step % eval_every == 0 or step % checkpoint_every == 0:
                # What is logged, evaluated or saved has been checked first.
                stop_if(guard.check(step, metrics))
            if logged:
                means = _log_train(log, step, window, on_nonfinite == "skip")
                elapsed = time.perf_counter() - window_start
                images_per_second = len(window) * data.batch_size / elapsed
                bar.set_postfix(loss=f"{means['loss']:.4f}", img_s=f"{images_per_second:.0f}")
                window, window_start = [], time.perf_counter()
            validation = None
            if step % eval_every == 0 or step == max_steps:
                validation = evaluate(
                    eval_fn, state, data, data.eval_split, task, mesh,
                    figure_path=os.path.join(run_dir, "figures", f"validation_step_{step:06d}.png"),
                )
                log.write(step, "validation", validation)
                stop_if(guard.check_validation(step, validation))
                if is_main and progress:
                    tqdm.write(f"step {step} validation: " + ", ".join(
                        f"{k}={v:.4f}" for k, v in validation.items() if k != "num_examples"
                    ))
                if is_main:
                    plot_curves(log.records, os.path.join(run_dir, "figures", "curves.png"))
                window_start = time.perf_counter()  # evaluation is not training time
            bar.update(1)
            if step % checkpoint_every == 0 or validation is not None:
                checkpoints.save(state, config, metrics=validation)
            if stopping:
                break
        bar.close()
        interrupted = stopping
        checkpoints.save(state, config)
        checkpoints.wait()
    if interrupted and is_main:
        cause = (signal.Signals(stop.requested).name if stop.requested is not None
                 else "a signal to another process")
        tqdm.write(
            f"medjax: stopped by {cause}; saved step {step} in "
            f"{run_dir}: run the same command again to resume"
        )
    log.close()

    records = log.records
    final = {
        split: next((r for r in reversed(records) if r["split"] == split), None)
        for split in ("train", "validation")
    }
    summary = {
        "steps": step,
        "max_steps": max_steps,
        "interrupted": interrupted,
        "final": final,
        "best": _best(records, checkpoints.ranked_best_step(), best_metric),
        "best_metric": best_metric,
        "best_checkpoint_step": checkpoints.best_step(),
        "train_images_per_second": None if math.isnan(images_per_second) else images_per_second,
        "parameters": count_params(state.params),
    }
    if is_main:
        plot_curves(records, os.path.join(run_dir, "figures", "curves.png"))
        reporting.write_json(os.path.join(run_dir, "summary.json"), summary)
    checkpoints.close()
    return summary


def _log_train(log, step: int, window: list[dict[str, jax.Array]], count_skipped: bool):
    """Writes the train record of a logging window (means over its applied
    updates; with ``count_skipped``, ``nonfinite_steps``) and returns it."""
    means, skipped = split_means(sharding.to_host(window))
    if count_skipped:
        means["nonfinite_steps"] = skipped
    log.write(step, "train", means)
    return means
