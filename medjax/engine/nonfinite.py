"""The training loop's side of the non-finite guard: reads the flag each
training step returns (``medjax.engine.step.NONFINITE``) and decides, by
``trainer.on_nonfinite``, whether the run goes on.

- ``stop`` (default): the first non-finite step stops the run;
- ``skip``: the step's update was dropped (its state is the previous one), the
  run goes on and counts it; ``max_nonfinite`` such steps in a row stop it.

A non-finite validation loss stops the run in both modes: an evaluation cannot
be skipped, and the parameters themselves then give non-finite outputs.
"""

import math

import jax
import numpy as np

from medjax.engine.step import NONFINITE, NONFINITE_QUANTITIES

HINT = (
    "try a lower optim.lr, gradient clipping (e.g. optim.grad_clip_norm=1.0) or "
    "higher precision"
)


def _local_value(flag: jax.Array) -> int:
    """The flag, replicated on every device, read from this process's first
    device: no collective, also on many hosts."""
    return int(np.asarray(flag.addressable_data(0)))


class NonFiniteGuard:
    """Checks steps in order, each once; ``check`` returns why the run must stop
    (one line, without the hint) or None."""

    def __init__(self, on_nonfinite: str = "stop", max_nonfinite: int = 10):
        self.skip = on_nonfinite == "skip"
        self.max_nonfinite = max_nonfinite
        self.checked_step = -1
        self.consecutive = 0

    def check(self, step: int, metrics: dict[str, jax.Array]) -> str | None:
        """Reads ``metrics[NONFINITE]`` of training step ``step`` (waits for that
        step, which the loop has already waited for or is about to)."""
        if step <= self.checked_step:
            return None
        self.checked_step = step
        code = _local_value(metrics[NONFINITE])
        if not code:
            self.consecutive = 0
            return None
        quantity = NONFINITE_QUANTITIES[code]
        if not self.skip:
            return f"step {step}: the training {quantity} is not finite (NaN or inf)"
        self.consecutive += 1
        if self.consecutive < self.max_nonfinite:
            return None
        return (
            f"steps {step - self.consecutive + 1}-{step}: {self.consecutive} updates "
            f"in a row skipped (trainer.max_nonfinite={self.max_nonfinite}), the "
            f"last for a non-finite training {quantity}"
        )

    @staticmethod
    def check_validation(step: int, validation: dict[str, float]) -> str | None:
        """Why the run must stop after evaluating ``step``, or None. Only the
        loss counts: a split-level metric can be NaN for a sound model (AUROC
        of a split with one class)."""
        loss = validation.get("loss")
        if loss is None or math.isfinite(loss):
            return None
        return f"step {step}: the validation loss is not finite ({loss})"


def split_means(window: list[dict[str, np.ndarray]]) -> tuple[dict[str, float], int]:
    """Means over the steps of a logging window whose update was applied, and
    the number that were skipped. ``window``: each step's metrics on the host,
    with ``NONFINITE``. When no update of the window was applied, the means of
    all its steps: what the run stopped on (NaN is logged as null)."""
    applied = [m for m in window if not int(m[NONFINITE])]
    means = {
        k: float(np.mean([m[k] for m in applied or window]))
        for k in window[0]
        if k != NONFINITE
    }
    return means, len(window) - len(applied)


def stop_message(problem: str, latest_checkpoint: int | None) -> str:
    """The one line the run stops with: what, what was kept, what to try."""
    kept = (
        f"the latest checkpoint, step {latest_checkpoint}, is the last good one"
        if latest_checkpoint is not None
        else "no checkpoint was saved"
    )
    return f"{problem}; stopped without saving it: {kept}; {HINT}"
