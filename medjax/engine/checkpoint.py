"""Orbax checkpoints of the training state, with the resolved config beside it.

One ``CheckpointManager`` in ``<run_dir>/checkpoints`` keeps the latest
``keep_last`` checkpoints and, in addition, the best one by a validation metric.

A metric that is NaN, infinite or missing ranks a checkpoint as the worst, in
both modes, so it can never push the real best out; ``best_step`` names only a
checkpoint whose metric is finite. Orbax writes a step to
``<step>.orbax-checkpoint-tmp-<time>`` and renames it to ``<step>`` once
complete, so a save cut short by a kill is never listed as a step. A step whose
files were damaged afterwards (truncated, deleted, overwritten) is found when it
is read: ``restore`` raises ``RunDirectoryError``, and ``restore_for_resume``
falls back to the newest readable step, setting the unreadable newer ones aside
as ``<step>.unreadable`` (kept for inspection, ignored by Orbax).
"""

import json
import logging
import math
import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from medjax.engine import distributed
from medjax.engine.state import TrainState
from medjax.errors import RunDirectoryError

logger = logging.getLogger(__name__)

# What reading a damaged checkpoint raises: tensorstore's errors (truncated or
# missing array chunks, a garbled manifest) are ValueErrors, as are JSON decode
# errors of the metadata files; a missing item is a KeyError.
UNREADABLE = (OSError, ValueError, KeyError)
UNREADABLE_SUFFIX = ".unreadable"


class Checkpoints:
    """Saves and restores ``TrainState`` (and the run's config) by step.

    Args:
        directory: the checkpoint directory (``<run_dir>/checkpoints``).
        keep_last: how many of the latest checkpoints are kept.
        best_metric: the validation metric that ranks checkpoints (None: none).
        best_mode: ``max`` or ``min``: which way ``best_metric`` is better.
        set_aside_unreadable: when resuming, set aside steps whose saved
            metrics cannot be read (Orbax reads every step's metrics when it
            opens the directory) instead of failing; another step must remain.
    """

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 2,
        best_metric: str | None = None,
        best_mode: str = "max",
        set_aside_unreadable: bool = False,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"trainer.best_mode: expected 'max' or 'min', got {best_mode!r}")
        if keep_last < 1:
            raise ValueError(f"trainer.keep_checkpoints: expected >= 1, got {keep_last}")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        self.best_mode = best_mode
        # Steps renamed to <step>.unreadable: {step: why it could not be read}.
        self.set_aside_steps: dict[int, str] = {}
        damaged = _unreadable_metrics(self.directory)
        if damaged:
            if not set_aside_unreadable or len(damaged) == len(
                _step_names(self.directory)
            ):
                step, reason = max(damaged.items())
                raise RunDirectoryError(
                    f"{self.directory}/{step}: unreadable checkpoint ({reason})"
                )
            for step, reason in damaged.items():
                self._set_aside(step, reason)
        keep: list[policies.PreservationPolicy] = [policies.LatestN(n=keep_last)]
        if best_metric:
            # Orbax keeps the last n after an ascending sort (descending for
            # reverse=True): the worst value sorts first in either mode.
            keep.append(
                policies.BestN(
                    get_metric_fn=self.rank, reverse=best_mode == "min", n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True,
                best_fn=self.rank if best_metric else None,
                best_mode=best_mode,
                preservation_policy=policies.AnyPreservationPolicy(keep),
            ),
        )

    def rank(self, metrics: dict[str, Any] | None) -> float:
        """``metrics[best_metric]``, or the worst value of ``best_mode`` when it
        is missing, None, NaN or infinite."""
        worst = -math.inf if self.best_mode == "max" else math.inf
        value = (metrics or {}).get(self.best_metric)
        if value is None or not math.isfinite(float(value)):
            return worst
        return float(value)

    def save(self, state: TrainState, config: dict[str, Any], metrics=None) -> None:
        """Saves at ``state.step`` (asynchronously); ``metrics`` rank it for 'best'.
        A step already saved is left as it is."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        if metrics is not None and self.best_metric:
            metrics = {k: float(v) for k, v in metrics.items()}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)
            ),
            metrics=metrics,
            force=True,
        )

    def steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def ranked_best_step(self) -> int | None:
        """The saved step with the best finite ``best_metric``; None if no saved
        step has one. Of equal values the latest wins, as in Orbax's ``BestN``
        (a stable sort keeps the last), so the step named is one it keeps."""
        if not self.best_metric:
            return None
        ranked = [
            (value, step) for step in self.manager.all_steps()
            if math.isfinite(value := self.rank(self.manager.metrics(step)))
        ]
        if not ranked:
            return None
        sign = 1 if self.best_mode == "max" else -1
        return max(ranked, key=lambda item: (sign * item[0], item[1]))[1]

    def best_step(self) -> int | None:
        """The best step by the metric, or the latest if none has a finite one."""
        best = self.ranked_best_step()
        return self.latest_step() if best is None else best

    def restore(self, template: TrainState, step: int) -> TrainState:
        """Restores ``step`` into arrays shaped, typed and sharded like ``template``.

        Raises:
            RunDirectoryError: the step's files cannot be read.
        """
        try:
            return self._restore(template, step)
        except UNREADABLE as error:
            drop_abandoned_read_noise()
            raise RunDirectoryError(
                f"{self.directory}/{step}: unreadable checkpoint ({first_line(error)})"
            ) from error

    def _restore(self, template: TrainState, step: int) -> TrainState:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            template,
        )
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"]

    def restore_for_resume(self, template: TrainState) -> tuple[TrainState, int]:
        """The newest readable checkpoint, for resuming: ``(template, 0)`` when
        none is saved. Unreadable newer steps are set aside (with a warning
        naming them and the step resumed from) so the resumed run can save
        those steps again.

        Raises:
            RunDirectoryError: there are checkpoints but none can be read.
        """
        failures: dict[int, str] = {}
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self._restore(template, step)
            except UNREADABLE as error:
                drop_abandoned_read_noise()
                failures[step] = first_line(error)
                continue
            for bad, reason in failures.items():
                self._set_aside(bad, reason)
            if failures:
                self.manager.reload()
            if self.set_aside_steps:
                bad = sorted(self.set_aside_steps)
                logger.warning(
                    "medjax: checkpoint step %s in %s cannot be read (%s); resuming "
                    "from step %d instead (the unreadable one kept as %s)",
                    ", ".join(map(str, bad)), self.directory,
                    self.set_aside_steps[bad[-1]], step,
                    ", ".join(f"{s}{UNREADABLE_SUFFIX}" for s in bad),
                )
            return state, step
        if failures:
            step = max(failures)
            raise RunDirectoryError(
                f"{self.directory}: no readable checkpoint to resume from (step "
                f"{step}: {failures[step]}; steps tried: {sorted(failures)}); "
                "move the directory away to start afresh"
            )
        return template, 0

    def config(self, step: int) -> dict[str, Any]:
        return self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def _set_aside(self, step: int, reason: str) -> None:
        """Renames ``<step>`` to ``<step>.unreadable`` (numbered if taken); in
        a multi-process run process 0 renames and the others wait for it."""
        self.set_aside_steps[step] = reason
        if not distributed.is_main_process():
            distributed.barrier(f"medjax_set_aside_{step}")
            return
        source = os.path.join(self.directory, str(step))
        target, count = source + UNREADABLE_SUFFIX, 1
        while os.path.exists(target):
            target, count = f"{source}{UNREADABLE_SUFFIX}-{count}", count + 1
        os.rename(source, target)
        distributed.barrier(f"medjax_set_aside_{step}")


def _step_names(directory: str) -> list[str]:
    """Committed step directories (Orbax's unpadded, unprefixed names)."""
    if not os.path.isdir(directory):
        return []
    return [name for name in os.listdir(directory) if name.isdigit()]


def _unreadable_metrics(directory: str) -> dict[int, str]:
    """Steps whose saved metrics are not JSON: Orbax would fail to open the
    directory at all (it reads them to rank the steps)."""
    damaged = {}
    for name in _step_names(directory):
        path = os.path.join(directory, name, "metrics", "metrics")
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as error:
            damaged[int(name)] = f"metrics: {first_line(error)}"
    return damaged


def drop_abandoned_read_noise() -> None:
    """After a failed restore, tensorstore still completes the reads Orbax gave
    up on, and their callbacks find Orbax's event loop closed: each prints an
    ``Event loop is closed`` traceback (dozens) through ``sys.unraisablehook``.
    From then on this process drops exactly those; anything else goes on to
    the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_reads", False):
        return

    def hook(unraisable):
        error = unraisable.exc_value
        closed_loop = isinstance(error, RuntimeError) and (
            str(error) == "Event loop is closed"
        )
        if not closed_loop:
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook


def first_line(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line (tensorstore's run over several)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
