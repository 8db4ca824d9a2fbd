"""The contract between the engine and a task.

A task is a frozen (hashable) dataclass subclassing :class:`Task`; it is a static
argument of the jitted steps. Every hook has a default, so a task overrides only
what makes it what it is. The engine calls, inside jit:

- ``prepare_batch(key, batch, *, train)``: the batch the model learns from or is
  evaluated on, built from the data's fields (patches of large images, a clean
  target beside a noisy input, fixed/moving pairs, views). Also what the model is
  initialised from, so a task that builds its inputs can initialise its model.
- on-device augmentation of the prepared batch, by the roles in
  ``batch_roles()`` (training only);
- ``inputs(batch)``: what the model is applied to (an array or a tuple);
- ``predict(apply, inputs)``: how the model sees whole inputs at evaluation and
  in ``medjax-predict`` (default: ``apply``; segmentation: sliding windows);
- ``loss(outputs, batch) -> (loss, {name: [B]})``: the scalar loss averaged
  over valid examples and per-example metrics, ``loss`` among them;
- ``host_outputs(outputs, batch) -> {name: [B, ...]}``: what split metrics and
  figures need on the host;

and on the host, once per evaluation:

- ``split_metrics(host_outputs)``: metrics over the whole split (AUROC, HD95, ...)
  from the concatenated host outputs of its valid examples;
- ``draw_cases(host_outputs, path, title)``: a figure of a few cases.

When a run is built, ``configure(data)`` checks that the data has the fields the
task ``needs()`` with the right roles (one line naming task, data and the missing
role otherwise) and returns the task with what comes from the data filled in
(its fields' roles, spacing, class counts). ``primary_metric`` is the split
metric that picks the best checkpoint when ``trainer.best_metric`` is null.

``medjax-predict`` asks ``prediction_role()`` what a prediction is (a
``label_map`` is written in the input's format and geometry; None: this task's
runs cannot predict files) and ``decode(outputs)`` for the array to write.
A ``points`` prediction (detection, landmarks) is a dict for ONE example,
``decode`` taking ``predict``'s outputs for a batch of one: ``{"points": [K,
ndim]`` voxel coordinates, ``"scores": [K]``, ``"valid": [K]`` bool, and
``"boxes": [K, 2 * ndim]}`` (``medjax.ops.boxes``) for detectors or ``"names":
[K]`` for landmarks; ``medjax.inferers.points`` writes it as CSV and JSON.

Every batch carries ``valid [B]`` (bool): False marks padding added to complete
the last evaluation batch.
"""

import dataclasses
import logging
from typing import Any, Callable, ClassVar

import jax.numpy as jnp
import numpy as np

from medjax.data import schema as roles
from medjax.errors import ConfigError
from medjax.metrics import count_nonfinite

logger = logging.getLogger("medjax")

Batch = dict[str, jnp.ndarray]


class TaskDataMismatch(ConfigError):
    """The data lacks a field the task needs, or holds it with another role."""


@dataclasses.dataclass(frozen=True)
class Task:
    """Defaults for every hook; see the module docstring.

    Attributes:
        schema: the roles of the data fields this task reads, filled in by
            ``configure`` (``((key, Role), ...)``; empty until then, when the
            task's own ``needs()`` stand in).
    """

    schema: roles.Schema = dataclasses.field(default=(), kw_only=True)

    #: The split metric that picks the best checkpoint (None: none).
    primary_metric: ClassVar[str | None] = None
    #: Which way ``primary_metric`` is better (``max`` or ``min``): the
    #: ``trainer.best_mode`` used with it when ``trainer.best_metric`` is null.
    primary_mode: ClassVar[str] = "max"

    # -- what the task reads ---------------------------------------------------------

    def needs(self) -> dict[str, str]:
        """``{key: role kind}`` of the data fields the task reads."""
        return {}

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The data fields read into batches: those ``needs()`` names, and the
        validity flags of its points and boxes."""
        keys = list(self.needs())
        for _, role in self.field_roles():
            if role.valid is not None and role.valid not in keys:
                keys.append(role.valid)
        return tuple(keys)

    def field_roles(self) -> roles.Schema:
        """The roles of the data fields the task reads: ``schema`` once
        configured, else the roles ``needs()`` implies."""
        if self.schema:
            return self.schema
        return tuple((key, roles.Role(kind)) for key, kind in self.needs().items()
                     if kind not in roles.GEOMETRIC_KINDS)

    def configure(self, data: Any, *, task_name: str = "", data_name: str = "") -> "Task":
        """The task with what comes from ``data`` filled in: the roles of the
        fields it reads. Subclasses extend it (spacing, class counts).

        Raises:
            TaskDataMismatch: ``data.schema`` lacks a needed field or role.
        """
        schema = dict(data.schema)
        wrong = roles.missing_roles(self.needs(), tuple(schema.items()))
        if wrong:
            key, kind, found = wrong[0]
            task = task_name or type(self).__name__
            name = data_name or getattr(data, "name", "") or "the data"
            has = f"has {found} {key!r}" if found else f"has no field {key!r}"
            article = "an" if kind[0] in "aeiou" else "a"
            raise TaskDataMismatch(
                f"task={task} needs {article} {kind} field {key!r}; data={name} {has} "
                f"(its fields: {roles.describe(tuple(schema.items()))})"
            )
        keys = list(self.needs())
        keys += [schema[k].valid for k in list(keys) if schema[k].valid]
        mine = roles.as_schema({k: schema[k] for k in keys})
        return dataclasses.replace(self, schema=mine)

    # -- inside the jitted steps -----------------------------------------------------

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """The batch the model sees, from the data's fields (default: as is)."""
        return batch

    def batch_roles(self) -> roles.Schema:
        """Roles of the prepared batch's fields, for augmentation: the data
        fields' roles, plus any field ``prepare_batch`` adds."""
        return self.field_roles()

    def inputs(self, batch: Batch) -> Any:
        """What the model is applied to: the first image (or features) field."""
        for key, role in self.field_roles():
            if role.kind in (roles.IMAGE, roles.FEATURES):
                return batch[key]
        raise NotImplementedError(f"{type(self).__name__}: no image or features field")

    def predict(self, apply: Callable, inputs: Any) -> Any:
        """Model outputs for whole inputs; ``apply`` is the model in inference
        mode."""
        return apply(inputs)

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        """Default: mean squared error of ``outputs`` against the ``target``
        field, per example."""
        from medjax import losses

        target_keys = roles.keys_of(self.field_roles(), roles.TARGET)
        if not target_keys:
            raise NotImplementedError(f"{type(self).__name__}: no loss and no target field")
        target = batch[target_keys[0]].astype(jnp.float32)
        predicted = jnp.reshape(outputs, target.shape).astype(jnp.float32)
        error = jnp.square(predicted - target).reshape(target.shape[0], -1).mean(-1)
        error = jnp.where(batch["valid"], error, 0.0)
        return losses.masked_mean(error, batch["valid"]), {"loss": error}

    def host_outputs(self, outputs: Any, batch: Batch) -> Batch:
        """Per-example arrays for split metrics and figures (default: none)."""
        return {}

    # -- on the host -----------------------------------------------------------------

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics over a whole split (default: none beyond the per-example
        means)."""
        return {}

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """A figure of a few cases at ``path`` (default: none)."""

    def prediction_role(self) -> str | None:
        """What ``medjax-predict`` writes: a role kind (``label_map``), or None
        when the task's predictions are not files."""
        return None

    def decode(self, outputs: Any) -> Any:
        """The array ``medjax-predict`` writes, from ``predict``'s outputs."""
        return outputs


def warn_nonfinite_scores(scores: np.ndarray, what: str, metric_names: str) -> None:
    """One warning line when some of ``scores [N, ...]`` are NaN or infinite:
    the metrics named are NaN then, and the likely cause is a diverged model."""
    count = count_nonfinite(scores)
    if count:
        logger.warning(
            "%d of %d examples have non-finite %s (NaN or inf): %s reported as NaN; "
            "the model's outputs are not finite (diverged parameters?)",
            count, len(scores), what, metric_names,
        )
