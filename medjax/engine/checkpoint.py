"""Orbax checkpoints of the training state, with the resolved config beside it.

One ``CheckpointManager`` in ``<run_dir>/checkpoints`` keeps the latest
``keep_last`` checkpoints and, in addition, the best one by a validation metric.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from medjax.engine.state import TrainState


class Checkpoints:
    """Saves and restores ``TrainState`` (and the run's config) by step."""

    def __init__(
        self,
        directory: str,
        *,
        keep_last: int = 2,
        best_metric: str | None = None,
        best_mode: str = "max",
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"trainer.best_mode: expected 'max' or 'min', got {best_mode!r}")
        if keep_last < 1:
            raise ValueError(f"trainer.keep_checkpoints: expected >= 1, got {keep_last}")
        self.best_metric = best_metric
        keep: list[policies.PreservationPolicy] = [policies.LatestN(n=keep_last)]
        best_fn = None
        if best_metric:
            best_fn = lambda metrics: metrics[best_metric]  # noqa: E731
            keep.append(
                policies.BestN(
                    get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                create=True,
                best_fn=best_fn,
                best_mode=best_mode,
                preservation_policy=policies.AnyPreservationPolicy(keep),
            ),
        )

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

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The best step by the metric, or the latest if none was ranked."""
        if self.best_metric and any(
            self.manager.metrics(step) for step in self.manager.all_steps()
        ):
            return self.manager.best_step()
        return self.manager.latest_step()

    def restore(self, template: TrainState, step: int) -> TrainState:
        """Restores ``step`` into arrays shaped, typed and sharded like ``template``."""
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            template,
        )
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"]

    def config(self, step: int) -> dict[str, Any]:
        return self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )["config"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
