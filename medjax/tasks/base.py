"""The contract between the training engine and a task.

A task is a small frozen (hashable) dataclass. The engine calls, inside jit:

- ``inputs(batch)``: the array the model is applied to;
- ``loss(outputs, batch) -> (loss, metrics)``: the scalar training loss, averaged
  over valid examples, and per-example metrics ``{name: [B]}`` that include
  ``loss`` itself;
- ``host_outputs(outputs, batch)``: per-example arrays ``{name: [B, ...]}`` that
  split-level metrics need (scores, labels);
- ``augment_fields``: which batch fields on-device augmentation moves together:
  ``{"images": keys, "masks": keys, "points": ((points_key, valid_key), ...)}``
  (see ``medjax.augment.Augmentation``);

and, on the host, once per evaluation:

- ``split_metrics(host_outputs)``: metrics over the whole split, given the
  concatenated ``host_outputs`` of its valid examples only.

Optional hooks, used when a task defines them:

- ``training_batch(key, batch)``: the batch a training step learns from, before
  augmentation (segmentation: foreground-oversampled patches);
- ``predict(apply, inputs)``: how the model sees whole inputs at evaluation and
  in ``medjax-predict`` (segmentation: sliding windows), ``apply`` being the
  model in inference mode;
- ``draw_cases(host_outputs, path, title)``: a figure of a few cases, drawn at
  each evaluation into ``figures/``;
- ``primary_metric``: the split metric that picks the best checkpoint when
  ``trainer.best_metric`` is null.

Every batch carries ``valid [B]`` (bool): False marks padding added to complete
the last evaluation batch. ``batch_keys`` names the fields the task reads.
"""

from typing import Any, Protocol

import jax.numpy as jnp
import numpy as np

Batch = dict[str, jnp.ndarray]


class Task(Protocol):
    batch_keys: tuple[str, ...]
    augment_fields: dict[str, tuple]

    def inputs(self, batch: Batch) -> jnp.ndarray: ...

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]: ...

    def host_outputs(self, outputs: Any, batch: Batch) -> Batch: ...

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]: ...
