"""Generative tasks: restricted Boltzmann machines (and the greedy pretraining of
a deep belief net's RBM stack).

The RBM's contrastive-divergence update is an ordinary loss here:
``mean F(v_data) - mean F(v_model)`` with ``v_model`` the end of the model's Gibbs
chain behind ``stop_gradient`` (``medjax.models.rbm.RBM``), so an RBM trains with
the same ``medjax.engine.step.train_step`` as every other model.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax import losses
from medjax.tasks.base import Batch

VISIBLE_KINDS = ("bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class RBMTask:
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

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (self.image_key,)

    @property
    def augment_fields(self) -> dict[str, tuple]:
        return {"images": (self.image_key,), "masks": (), "points": ()}

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


def save_image_grid(
    images: np.ndarray, path: str, *, columns: int = 8, title: str = "", cmap: str = "gray"
) -> None:
    """A PNG grid of ``images [N, H, W(, 1)]`` (or ``[N, D]`` with square ``D``),
    each scaled to its own range, ``columns`` a row."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(len(images), side, side)
    if images.ndim == 4:
        images = images[..., 0]
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), images):
        ax.imshow(image, cmap=cmap, interpolation="nearest")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- a plain jitted loop for RBMs on in-memory arrays (greedy DBN pretraining)


def fit_rbm(
    model,
    data: np.ndarray,
    *,
    tx: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    task: "RBMTask | None" = None,
    variables=None,
) -> tuple[dict, list[dict[str, float]]]:
    """Trains ``model`` (an RBM) on the rows of ``data [N, ...]`` by its CD loss.

    The step is the engine's (``medjax.engine.step.train_step``) in miniature:
    ``apply(train=True, rngs={"sample": ...}, mutable=["batch_stats"])``, then
    ``task.loss`` and an optax update; but on an in-memory array, shuffled each
    epoch (the last partial batch dropped), with no checkpoints, so that the
    layers of a DBN pretrain in seconds. ``task`` defaults to ``RBMTask`` with
    ``threshold=None`` (``data`` already holds the visible values).

    Returns:
        The trained variables (``params``, and ``batch_stats`` for PCD) and one
        ``{metric: mean}`` per epoch.
    """
    task = task or RBMTask(visible=model.visible, threshold=None)
    data = np.asarray(data, np.float32)
    if len(data) < batch_size:
        raise ValueError(f"fit_rbm: {len(data)} rows is fewer than batch_size={batch_size}")
    init_key, key = jax.random.split(key)
    if variables is None:
        variables = model.init(init_key, task.inputs({task.image_key: data[:1]}), train=False)
    variables = dict(variables)
    opt_state = tx.init(variables["params"])

    @jax.jit
    def step(variables, opt_state, images, key):
        batch = {task.image_key: images, "valid": jnp.ones(images.shape[0], bool)}

        def loss_fn(params):
            outputs, updates = model.apply(
                {**variables, "params": params}, task.inputs(batch), train=True,
                rngs={"sample": key}, mutable=["batch_stats"],
            )
            loss, per_example = task.loss(outputs, batch)
            return loss, (per_example, updates)

        grads, (per_example, updates) = jax.grad(loss_fn, has_aux=True)(variables["params"])
        changes, opt_state = tx.update(grads, opt_state, variables["params"])
        new = {**variables, **updates, "params": optax.apply_updates(variables["params"], changes)}
        return new, opt_state, {k: jnp.mean(v) for k, v in per_example.items()}

    history, step_count = [], 0
    steps_per_epoch = len(data) // batch_size
    for epoch in range(epochs):
        order = np.random.default_rng([0, epoch]).permutation(len(data))
        sums = {}
        for i in range(steps_per_epoch):
            rows = order[i * batch_size : (i + 1) * batch_size]
            variables, opt_state, metrics = step(
                variables, opt_state, data[rows], jax.random.fold_in(key, step_count)
            )
            step_count += 1
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + value
        history.append({k: float(v) / steps_per_epoch for k, v in sums.items()})
    return variables, history


def rbm_features(model, variables, data: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``p(h = 1 | v) [N, H]`` of the rows of ``data`` (visible values)."""
    run = jax.jit(
        lambda params, v: model.apply({"params": params}, v, method="hidden_probabilities")
    )
    data = np.asarray(data, np.float32)
    return np.concatenate([
        np.asarray(run(variables["params"], data[i : i + batch_size]))
        for i in range(0, len(data), batch_size)
    ])


def pretrain_dbn(
    rbms: Sequence,
    images: np.ndarray,
    *,
    tx: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    threshold: float | None = 0.0,
) -> tuple[list[dict], list[list[dict[str, float]]]]:
    """Greedy layer-wise pretraining of a deep belief net (Hinton et al. 2006).

    RBM 1 learns the binarised images (``preprocess(images, "bernoulli",
    threshold)``), RBM ``l + 1`` learns RBM ``l``'s hidden probabilities over the
    training set (mean-field data, the usual choice); each with ``fit_rbm``.

    Args:
        rbms: ``RBM`` modules, bottom first (Bernoulli visibles).
        images: ``[N, ...]`` training images.
        tx, epochs, batch_size: for every layer.
        key: PRNG key (layer ``l`` uses ``fold_in(key, l)``).
        threshold: binarisation of the images (None: they are in [0, 1] already).

    Returns:
        Each layer's variables and per-epoch history; ``medjax.models.dbn``
        copies the former into a ``DBNClassifier``.
    """
    data = np.asarray(preprocess(images, "bernoulli", threshold)).reshape(len(images), -1)
    layers, histories = [], []
    for index, rbm in enumerate(rbms):
        if rbm.visible != "bernoulli":
            raise ValueError(f"pretrain_dbn: layer {index} must have Bernoulli visibles")
        variables, history = fit_rbm(
            rbm, data, tx=tx, epochs=epochs, batch_size=batch_size,
            key=jax.random.fold_in(key, index),
        )
        layers.append(variables)
        histories.append(history)
        data = rbm_features(rbm, variables, data)
    return layers, histories
