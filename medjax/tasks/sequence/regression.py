"""Regression of one value per sequence: the ejection fraction of a cine."""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
import optax

from medjax import losses, metrics
from medjax.data import schema as roles
from medjax.tasks.base import Batch, Task, warn_nonfinite_scores
from medjax.tasks.sequence.roles import check_time_axis

LOSS_FUNCTIONS = ("mse", "huber")


@dataclasses.dataclass(frozen=True)
class SequenceRegressionTask(Task):
    """Regression of ``batch[target_key] [B]`` (a ``target`` field, e.g. the
    ejection fraction as a fraction in [0, 1]) from a sequence
    ``batch[image_key] [B, T, H, W, C]`` (an image field with a time axis).

    The model's output ``[B]`` or ``[B, 1]`` is the standardised target
    ``(y - target_center) / target_scale``, so a freshly initialised head starts
    near the mean and the loss has unit scale (the ejection fractions of the
    phantoms are 0.25-0.70: centre 0.5, scale 0.15); predictions are
    ``target_center + target_scale * output``.

    Per example: ``loss`` (``mse``, or ``huber`` with ``huber_delta`` in
    standardised units, as ``optax.huber_loss``) and ``mae``. Over a split (host
    side), in the target's own units (EF: a fraction): ``mae``, ``rmse`` and
    ``r2`` (``medjax.metrics``); with ``percent_metrics`` also ``mae_pp`` and
    ``rmse_pp``, the same times 100 (EF percentage points, as EchoNet-Dynamic
    reports its MAE). Each evaluation draws predicted against true
    (``<figure>_scatter.png``).

    The best checkpoint is picked by ``r2`` (``primary_metric``), which rises
    as ``rmse`` falls on a fixed split, so it suits ``trainer.best_mode: max``,
    the default; to pick by MAE set ``trainer.best_metric=mae_pp
    trainer.best_mode=min`` (as ``experiment=cine_ef`` does).
    """

    image_key: str = "image"
    target_key: str = "ejection_fraction"
    loss_function: str = "mse"
    huber_delta: float = 1.0
    target_center: float = 0.0
    target_scale: float = 1.0
    percent_metrics: bool = True

    primary_metric = "r2"  # higher is better, like trainer.best_mode's default

    def __post_init__(self):
        if self.loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"task.loss_function: expected one of {LOSS_FUNCTIONS}, "
                f"got {self.loss_function!r}"
            )
        if not self.huber_delta > 0:
            raise ValueError(f"task.huber_delta: expected > 0, got {self.huber_delta}")
        if not self.target_scale > 0:
            raise ValueError(
                f"task.target_scale: expected > 0, got {self.target_scale}"
            )

    def needs(self) -> dict[str, str]:
        return {self.image_key: roles.IMAGE, self.target_key: roles.TARGET}

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> Task:
        """The roles, and that the image has a time axis."""
        configured = super().configure(data, task_name=task_name, data_name=data_name)
        check_time_axis(
            self, data, self.image_key, time=True, task_name=task_name,
            data_name=data_name,
        )
        return configured

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def predictions(self, outputs: jnp.ndarray) -> jnp.ndarray:
        """``[B]`` predicted targets in the target's units from outputs ``[B]``
        or ``[B, 1]`` (standardised)."""
        outputs = jnp.reshape(outputs, (outputs.shape[0],)).astype(jnp.float32)
        return self.target_center + self.target_scale * outputs

    def loss(self, outputs: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        valid = batch["valid"]
        target = batch[self.target_key].astype(jnp.float32)
        if outputs.size != target.shape[0]:
            raise ValueError(
                f"task: {type(self).__name__} needs one output per sequence "
                f"(model.num_outputs=1), got outputs of shape {outputs.shape}"
            )
        standardised = (target - self.target_center) / self.target_scale
        output = jnp.reshape(outputs, target.shape).astype(jnp.float32)
        if self.loss_function == "huber":
            per_example = optax.huber_loss(output, standardised, delta=self.huber_delta)
        else:
            per_example = jnp.square(output - standardised)
        per_example = jnp.where(valid, per_example, 0.0)
        error = jnp.abs(self.predictions(outputs) - target)
        per_example_metrics = {"loss": per_example, "mae": jnp.where(valid, error, 0.0)}
        return losses.masked_mean(per_example, valid), per_example_metrics

    def host_outputs(self, outputs: jnp.ndarray, batch: Batch) -> Batch:
        return {
            "prediction": self.predictions(outputs),
            "target": batch[self.target_key].astype(jnp.float32),
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """``mae``, ``rmse``, ``r2`` (and ``mae_pp``, ``rmse_pp``) of the split;
        NaN, with one warning line, when a prediction is not finite."""
        predicted, target = host_outputs["prediction"], host_outputs["target"]
        warn_nonfinite_scores(predicted, "predictions", "mae, rmse and r2")
        mae = float(np.mean(np.abs(predicted - target)))
        rmse = float(np.sqrt(metrics.mean_squared_error(target, predicted)))
        r2 = float(metrics.r2_score(target, predicted))
        result = {"mae": mae, "rmse": rmse, "r2": r2}
        if self.percent_metrics:
            result.update(mae_pp=100 * mae, rmse_pp=100 * rmse)
        return result

    def draw_cases(
        self, host_outputs: dict[str, np.ndarray], path: str, title: str = ""
    ) -> None:
        """Predicted against true targets of this evaluation, beside ``path``."""
        from medjax.viz.regression import plot_predicted_vs_true  # matplotlib here only

        scale, unit = (100.0, " (%)") if self.percent_metrics else (1.0, "")
        plot_predicted_vs_true(
            scale * host_outputs["target"], scale * host_outputs["prediction"],
            os.path.splitext(path)[0] + "_scatter.png",
            title=title, quantity=self.target_key.replace("_", " ") + unit,
        )
