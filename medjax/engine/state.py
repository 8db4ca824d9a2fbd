"""Training state: one pytree holding everything a resumed run needs."""

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.data import pipeline
from medjax.engine import sharding
from medjax.runtime import random_key


class TrainState(flax.struct.PyTreeNode):
    """Parameters, BatchNorm statistics, optimizer state and step counter.

    ``apply_fn`` and ``tx`` are static (not saved in checkpoints)."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def variables(self) -> dict[str, Any]:
        variables = {"params": self.params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables

    def apply_gradients(self, grads, batch_stats, *, is_finite=None) -> "TrainState":
        """The state after one optimizer update by ``grads``, with the forward
        pass's new ``batch_stats``.

        Args:
            grads: gradients, shaped like ``params``.
            batch_stats: BatchNorm statistics of the forward pass.
            is_finite: a boolean scalar (or None: always update). When false the
                update is dropped: parameters, BatchNorm statistics and
                optimizer state stay those of ``self`` and only ``step``
                advances (so the data order and the step's random streams stay
                those of an uninterrupted run; the optimizer's own count, hence
                its learning-rate schedule, does not advance).

        The choice is a ``lax.cond`` between the updated and the kept state,
        computed before it. A ``jnp.where`` per leaf would fuse into the
        reductions that produce BatchNorm statistics and Adam moments and change
        their summation order (a finite run's numbers then differ in the last
        bits); the ``cond`` leaves the update's code as it was, and costs at
        most a copy of the chosen state (``experiments/benchmarks/
        nonfinite_guard.py``). ``optax.apply_if_finite`` would leave the
        BatchNorm statistics unguarded, apply a bad update anyway after its
        ``max_consecutive_errors`` and change the optimizer state's structure
        (old checkpoints would no longer restore).
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        updated = self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        if is_finite is None:
            return updated
        kept = self.replace(step=self.step + 1)
        return jax.lax.cond(
            is_finite, lambda new, old: new, lambda new, old: old, updated, kept
        )


def create_train_state(model, tx, sample_inputs, key) -> TrainState:
    """Initialises ``model`` on ``sample_inputs [B, ...]`` (only shapes matter)."""
    variables = model.init({"params": key}, sample_inputs, train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def init_state(model, tx, data, task, mesh, seed: int) -> TrainState:
    """A fresh state, replicated over ``mesh``, initialised from the shapes of
    what the model sees: ``task.inputs`` of the task's training batch of one
    example of the training split (so a task that builds its inputs, e.g. views
    or patches, initialises its model on them)."""
    sample = pipeline.read_examples(
        data.source(data.train_split), [0], data.convert, task.batch_keys
    )
    sample["valid"] = np.ones(1, bool)
    init_key = jax.random.fold_in(random_key(seed), 0)

    def create(key):
        batch = task.prepare_batch(jax.random.fold_in(key, 2), sample, train=True)
        return create_train_state(model, tx, task.inputs(batch), key)

    return jax.jit(create, out_shardings=sharding.replicated(mesh))(init_key)
