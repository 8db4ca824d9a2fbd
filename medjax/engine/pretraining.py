"""Greedy layer-wise pretraining on in-memory arrays: RBM stacks (deep belief
nets) and stacked autoencoders.

Each level learns the codes of the level below, computed once by the levels
already trained and held in memory, so every level trains by
``medjax.engine.fit_arrays.fit_arrays`` rather than the dataset loop: the
shallow levels are not models the engine knows, and the data fit in memory.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.engine.fit_arrays import fit_arrays
from medjax.runtime import random_key
from medjax.tasks.generative.rbm import RBMTask, preprocess

# -- restricted Boltzmann machines and deep belief nets


def fit_rbm(
    model,
    data: np.ndarray,
    *,
    tx: optax.GradientTransformation,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    task: RBMTask | None = None,
    variables=None,
) -> tuple[dict, list[dict[str, float]]]:
    """Trains ``model`` (an RBM) on the rows of ``data [N, ...]`` by its CD loss.

    The step is the engine's (``medjax.engine.step.train_step``) in miniature:
    ``apply(train=True, rngs={"sample": ...}, mutable=["batch_stats"])``, then
    ``task.loss`` and an optax update; but on an in-memory array, in a fresh
    permutation each epoch (``fit_arrays``' ``"epochs"`` order, the last partial
    batch dropped), with no checkpoints, so that the layers of a DBN pretrain in
    seconds. ``task`` defaults to ``RBMTask`` with ``threshold=None`` (``data``
    already holds the visible values).

    Args:
        model: a ``medjax.models.rbm.RBM``.
        data: ``[N, ...]`` visible values (or images ``task.inputs`` turns into
            them).
        tx: the optimiser.
        epochs, batch_size: passes over ``data`` and rows a step.
        key: PRNG key: ``split`` into the initialisation's and the steps' (step
            ``i`` samples with ``fold_in(steps_key, i)``).
        task: the loss and input preprocessing.
        variables: start from these instead of a fresh initialisation.

    Returns:
        The trained variables (``params``, and ``batch_stats`` for PCD) and one
        ``{metric: mean over the epoch's steps}`` per epoch.
    """
    task = task or RBMTask(visible=model.visible, threshold=None)
    data = np.asarray(data, np.float32)
    if len(data) < batch_size:
        raise ValueError(f"fit_rbm: {len(data)} rows is fewer than batch_size={batch_size}")
    init_key, key = jax.random.split(key)
    if variables is None:
        variables = model.init(init_key, task.inputs({task.image_key: data[:1]}), train=False)
    variables = dict(variables)
    params = variables.pop("params")

    def loss_fn(params, images, key, state):
        batch = {task.image_key: images, "valid": jnp.ones(images.shape[0], bool)}
        outputs, updates = model.apply(
            {**state, "params": params}, task.inputs(batch), train=True,
            rngs={"sample": key}, mutable=["batch_stats"],
        )
        loss, per_example = task.loss(outputs, batch)
        means = {name: jnp.mean(value) for name, value in per_example.items()}
        return loss, (means, {**state, **updates})

    steps_per_epoch = len(data) // batch_size
    fit = fit_arrays(
        loss_fn, params, data, tx=tx, steps=epochs * steps_per_epoch,
        batch_size=batch_size, order="epochs", key=key, state=variables,
    )
    metrics = {name: np.asarray(values) for name, values in fit.metrics.items()}
    history = []
    for epoch in range(epochs):
        steps = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        # Summed in float32, one step after the other, as the metrics arrive.
        history.append({
            name: float(sum(values[steps], np.float32(0.0))) / steps_per_epoch
            for name, values in metrics.items()
        })
    return {**fit.state, "params": fit.params}, history


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
    training set (mean-field data, the usual choice); each with :func:`fit_rbm`.

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


# -- stacked autoencoders


def _dense(params, x):
    return x @ params["kernel"] + params["bias"]


def train_stacked_autoencoder(
    model, images: np.ndarray, *, pretrain_steps: int = 500, finetune_steps: int = 500,
    batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
) -> tuple[dict, dict[str, Any]]:
    """Greedy layer-wise pretraining of a ``StackedAutoencoder``, then end-to-end
    fine-tuning of the whole stack, on in-memory ``images [N, *S, C]``.

    Level ``k`` is the shallow autoencoder ``encoder_k`` -> ``decoder_k``. It is
    trained for ``pretrain_steps`` to reconstruct the codes of level ``k - 1``
    (the flattened images for level 0), which are fixed: computed once by the
    already-trained encoders. Each level thus learns a representation of the one
    below without gradients flowing through the stack (Bengio et al. 2007). The
    stacked encoders and decoders are then fine-tuned together on image
    reconstruction for ``finetune_steps``. Both phases use Adam on ``batch_size``
    rows drawn at random each step (``fit_arrays``' ``"random"`` order). (Training
    the stack end to end from scratch is ``medjax-train
    model=stacked_autoencoder_small``.)

    Returns:
        ``({"params": ...}`` for ``model.apply``, ``history)``, history holding
        ``pretrain_losses`` (one list per level), ``finetune_losses``, and the
        whole stack's image ``mse_after_pretraining`` and
        ``mse_after_finetuning``.
    """
    images = jnp.asarray(images, jnp.float32)
    key = random_key(seed)
    params = dict(model.init(jax.random.fold_in(key, 0), images[:1], train=False)["params"])
    tx = optax.adam(learning_rate)
    codes = images.reshape(len(images), -1)
    pretrain_losses = []
    for k in range(model.depth):
        def level_loss(level, x, _key, k=k):
            hidden = model.layer_activation(k, _dense(level["encoder"], x))
            out = _dense(level["decoder"], hidden)
            out = jax.nn.relu(out) if k > 0 else out
            return jnp.mean(jnp.square(out - x))

        level = {"encoder": params[f"encoder_{k}"], "decoder": params[f"decoder_{k}"]}
        fit = fit_arrays(
            level_loss, level, codes, tx=tx, steps=pretrain_steps,
            batch_size=batch_size, key=jax.random.fold_in(key, 1 + k),
        )
        level = fit.params
        params[f"encoder_{k}"], params[f"decoder_{k}"] = level["encoder"], level["decoder"]
        pretrain_losses.append(fit.losses.tolist())
        codes = model.layer_activation(k, _dense(level["encoder"], codes))

    def stack_mse(p, x):
        return jnp.mean(jnp.square(model.apply({"params": p}, x, train=True)["reconstruction"] - x))

    whole = jax.jit(stack_mse)
    after_pretraining = float(whole(params, images))
    fit = fit_arrays(
        lambda p, x, _key: stack_mse(p, x), params, images, tx=tx,
        steps=finetune_steps, batch_size=batch_size, key=jax.random.fold_in(key, 1000),
    )
    return {"params": fit.params}, {
        "pretrain_losses": pretrain_losses,
        "finetune_losses": fit.losses.tolist(),
        "mse_after_pretraining": after_pretraining,
        "mse_after_finetuning": float(whole(fit.params, images)),
    }
