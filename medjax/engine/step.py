"""The pure training and evaluation steps, shared by every task, and their
compilation over the data mesh."""

from functools import partial

import jax
import jax.numpy as jnp
import optax

from medjax.losses import masked_mean
from medjax.runtime import compiler_options, random_key
from medjax.engine import sharding
from medjax.engine.state import TrainState

# The key of the training step's metrics that holds its non-finite guard: an
# int32 scalar, 0 when the update was finite, else the code of the quantity that
# was not (the loss is named first: a non-finite loss makes the gradient so too).
NONFINITE = "nonfinite"
NONFINITE_QUANTITIES = {1: "loss", 2: "gradient norm"}

#: ``trainer.precision``: the dtype the model computes in. Parameters,
#: optimizer state, BatchNorm statistics, losses and metrics stay float32.
PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def in_precision(apply_fn, precision: str = "fp32"):
    """``apply_fn(variables, inputs, **kwargs)`` computing in ``precision``:
    floating variables and inputs cast to its dtype on the way in, floating
    outputs (and mutated collections, e.g. BatchNorm statistics) cast back
    to float32 on the way out; the gradient flows through the casts to the
    float32 parameters. The one place where ``trainer.precision`` acts."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"trainer.precision: expected one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    dtype = PRECISIONS[precision]
    if dtype == jnp.float32:
        return apply_fn

    def apply(variables, inputs, **kwargs):
        result = apply_fn(_cast_floats(variables, dtype), _cast_floats(inputs, dtype), **kwargs)
        return _cast_floats(result, jnp.float32)

    return apply


def train_step(state: TrainState, batch, key, *, task, augment=None, guard=True,
               precision="fp32"):
    """One optimizer update, after on-device augmentation of the batch.

    Args:
        state: replicated training state.
        batch: dict of ``[B, ...]`` arrays, sharded over ``data``, with ``valid [B]``.
        key: the run's base PRNG key; the step folds in ``state.step`` so a resumed
            run draws the same numbers. The model gets two streams: ``dropout``
            and ``sample`` (for stochastic models, e.g. an RBM's Gibbs chain).
        task: a ``medjax.tasks.base.Task``: ``prepare_batch`` builds what the
            model learns from, ``loss`` scores it.
        augment: a ``medjax.augment.Augmentation`` (or None), applied to the
            prepared batch's fields by their roles, ``task.batch_roles()``.
        guard: check that the loss and the global gradient norm are finite; a
            non-finite update is dropped (``TrainState.apply_gradients``), so
            the returned state never holds NaN or inf it did not get. False:
            the step without the check (for the benchmark that prices it).
        precision: ``fp32`` or ``bf16``, the model's compute dtype
            (:func:`in_precision`).

    Returns:
        The new state and ``{metric: scalar}`` averaged over valid examples;
        with ``guard``, also ``metrics[NONFINITE]``: 0 when the update was
        applied, else a key of ``NONFINITE_QUANTITIES``. It travels with the
        metrics, which the loop reads anyway, so the check costs no extra
        device-to-host wait.
    """
    key = jax.random.fold_in(key, state.step)
    # Streams: 1 augmentation, 2 the task's batch, 3 the model's sampling; the
    # numbers are those of the loop before the Task contract, kept so runs repeat.
    batch = task.prepare_batch(jax.random.fold_in(key, 2), batch, train=True)
    if augment is not None:
        batch = augment(jax.random.fold_in(key, 1), batch, task.batch_roles())

    apply_fn = in_precision(state.apply_fn, precision)

    def loss_fn(params):
        variables = {**state.variables(), "params": params}
        outputs, updates = apply_fn(
            variables, task.inputs(batch), train=True,
            rngs={"dropout": key, "sample": jax.random.fold_in(key, 3)},
            mutable=["batch_stats"],
        )
        loss, per_example = task.loss(outputs, batch)
        return loss, (per_example, updates.get("batch_stats", {}))

    value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (per_example, batch_stats)), grads = value_and_grad(state.params)
    metrics = {k: masked_mean(v, batch["valid"]) for k, v in per_example.items()}
    if not guard:
        return state.apply_gradients(grads, batch_stats), metrics
    # Two scalars: the loss, and one reduction over the gradients, their sum of
    # squares (it overflows to inf before any single gradient does, so when it
    # is finite the optimizer's squared-gradient moments stay finite too).
    loss_is_finite = jnp.isfinite(loss)
    grads_are_finite = jnp.isfinite(optax.tree.norm(grads, squared=True))
    state = state.apply_gradients(
        grads, batch_stats, is_finite=loss_is_finite & grads_are_finite
    )
    metrics[NONFINITE] = jnp.where(
        loss_is_finite, jnp.where(grads_are_finite, 0, 2), 1
    ).astype(jnp.int32)
    return state, metrics


def eval_step(state: TrainState, batch, *, task, precision="fp32"):
    """Per-example metrics ``{name: [B]}`` and ``host_outputs`` for one batch; the
    loop drops padded rows and reduces on the host. The task's ``predict`` (e.g.
    sliding windows) decides how the model sees whole inputs; its
    ``prepare_batch(train=False)`` draws from a fixed key, so every evaluation
    of a checkpoint sees the same batch."""

    apply_fn = in_precision(state.apply_fn, precision)

    def apply(inputs):
        return apply_fn(state.variables(), inputs, train=False)

    batch = task.prepare_batch(random_key(0), batch, train=False)
    outputs = task.predict(apply, task.inputs(batch))
    _, per_example = task.loss(outputs, batch)
    return per_example, task.host_outputs(outputs, batch)


def compile_steps(task, mesh, augment=None, *, guard=True, precision="fp32"):
    """``train_step`` and ``eval_step`` jitted once for ``mesh``: batches sharded on
    ``data``, state and key replicated, the old state's buffers donated.
    Augmentation runs in the training step only; ``guard`` is ``train_step``'s;
    both compute in ``precision``."""
    in_precision(None, precision)  # fails early on an unknown name
    data, same = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    options = compiler_options()
    train = jax.jit(
        partial(train_step, task=task, augment=augment, guard=guard, precision=precision),
        in_shardings=(same, data, same),
        out_shardings=(same, same),
        donate_argnums=0,
        compiler_options=options,
    )
    evaluate = jax.jit(
        partial(eval_step, task=task, precision=precision), in_shardings=(same, data),
        out_shardings=data,
        compiler_options=options,
    )
    return train, evaluate
