"""The RBM task: a restricted Boltzmann machine trained by contrastive divergence.

The RBM's contrastive-divergence update is an ordinary loss here:
``mean F(v_data) - mean F(v_model)`` with ``v_model`` the end of the model's Gibbs
chain behind ``stop_gradient`` (``medjax.models.rbm.RBM``), so an RBM trains with
the same ``medjax.engine.step.train_step`` as every other model. The greedy
pretraining of a deep belief net's RBM stack is
``medjax.engine.pretraining.pretrain_dbn``.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np

from medjax import losses
from medjax.data import schema as roles
from medjax.tasks.base import Batch, Task

VISIBLE_KINDS = ("bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class RBMTask(Task):
    """Trains an RBM on ``batch[image_key]`` by contrastive divergence.

    What the model sees (``inputs``): Bernoulli visibles get the images binarised
    at ``threshold`` (``image > threshold``; the phantoms are windowed to
    [-1, 1], so 0 keeps tissue brighter than the window centre, 40 HU), or, with
    ``threshold`` null, the values as they are (they must lie in [0, 1], e.g. a
    lower RBM's hidden probabilities). Gaussian visibles get each image
    standardised to zero mean and unit variance over its pixels (the model's unit
    variance assumption).

    Per example: ``loss`` (``F(v) - mean F(v_model)``; it has no fixed optimum and
    is not a likelihood: watch the other metrics), ``free_energy``,
    ``reconstruction_error`` (mean squared error per pixel of the mean-field
    reconstruction), and in evaluation ``pseudo_log_likelihood`` (Bernoulli: exact,
    ``sum_i log p(v_i | v_-i)``; scikit-learn's ``score_samples`` is an unbiased
    one-bit estimate of it) or ``reconstruction_r2`` (Gaussian: ``1 -
    reconstruction_error``, which is R^2 because every standardised image has
    unit variance). ``primary_metric`` is the one of these two that applies.
    """

    image_key: str = "image"
    visible: str = "bernoulli"
    threshold: float | None = 0.0
    num_figure_cases: int = 8

    def __post_init__(self):
        if self.visible not in VISIBLE_KINDS:
            raise ValueError(
                f"task.visible: expected one of {VISIBLE_KINDS}, got {self.visible!r}"
            )

    @property
    def primary_metric(self) -> str:  # the default trainer.best_metric (max)
        return "pseudo_log_likelihood" if self.visible == "bernoulli" else "reconstruction_r2"

    def needs(self) -> dict[str, str]:
        return {self.image_key: roles.IMAGE}

    def inputs(self, batch: Batch) -> jnp.ndarray:
        """The visible units' values, ``[B, ...]`` like ``batch[image_key]``."""
        return preprocess(batch[self.image_key], self.visible, self.threshold)

    def loss(self, outputs: dict, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        valid = batch["valid"]
        free_energy, model_energy = outputs["free_energy"], outputs["free_energy_model"]
        # The negative phase: one row per example (CD-k, evaluation) or a
        # persistent chain of its own size (PCD), which padding never reaches.
        if model_energy.shape[0] == free_energy.shape[0]:
            model_term = losses.masked_mean(model_energy, valid)
        else:
            model_term = jnp.mean(model_energy)
        per_example = free_energy - model_term
        v = self.inputs(batch).reshape(free_energy.shape[0], -1)
        error = jnp.mean((v - outputs["reconstruction"]) ** 2, axis=-1)
        per_example_metrics = {
            "loss": per_example,
            "free_energy": free_energy,
            "reconstruction_error": error,
        }
        if "pseudo_log_likelihood" in outputs:
            per_example_metrics["pseudo_log_likelihood"] = outputs["pseudo_log_likelihood"]
        if self.visible == "gaussian":
            per_example_metrics["reconstruction_r2"] = 1.0 - error
        return losses.masked_mean(free_energy, valid) - model_term, per_example_metrics

    def host_outputs(self, outputs: dict, batch: Batch) -> Batch:
        visible = self.inputs(batch)
        return {
            "visible": visible,
            "reconstruction": outputs["reconstruction"].reshape(visible.shape),
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {}  # every metric is a mean over examples

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """The first ``num_figure_cases`` inputs (top row) over their mean-field
        reconstructions (bottom row)."""
        count = min(self.num_figure_cases, len(host_outputs["visible"]))
        images = np.concatenate(
            [host_outputs["visible"][:count], host_outputs["reconstruction"][:count]]
        )
        from medjax.viz.generative import save_image_grid

        save_image_grid(images, path, columns=count, title=title or "inputs / reconstructions")


def preprocess(images: jnp.ndarray, visible: str = "bernoulli", threshold: float | None = 0.0):
    """Images ``[B, ...]`` as an RBM's visible units (see ``RBMTask``)."""
    images = jnp.asarray(images).astype(jnp.float32)
    if visible == "gaussian":
        axes = tuple(range(1, images.ndim))
        mean = jnp.mean(images, axis=axes, keepdims=True)
        std = jnp.std(images, axis=axes, keepdims=True)
        return (images - mean) / jnp.maximum(std, 1e-6)
    if threshold is None:
        return images
    return (images > threshold).astype(jnp.float32)
