"""The one train/eval step drives a task only through its contract hooks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from medjax.engine import sharding
from medjax.engine.optim import make_optimizer
from medjax.engine.state import init_state
from medjax.engine.step import eval_step, train_step
from medjax.models.mlp import mlp_tiny
from medjax.runtime import random_key
from medjax.tasks.classification.task import ClassificationTask

CORNER = 5


@dataclasses.dataclass(frozen=True)
class CornerTask(ClassificationTask):
    """Learns from (and predicts on) the top-left CORNER x CORNER pixels; its
    batch hook records the number it drew and whether it was training."""

    def prepare_batch(self, key, batch, *, train):
        corner = batch["image"][:, :CORNER, :CORNER]
        drawn = jnp.full(batch["valid"].shape, jax.random.uniform(key))
        return {**batch, "image": corner, "drawn": drawn,
                "train": jnp.full(batch["valid"].shape, float(train))}

    def loss(self, outputs, batch):
        loss, per_example = super().loss(outputs, batch)
        return loss, {**per_example, "drawn": batch["drawn"], "train": batch["train"]}


def test_the_model_is_initialised_from_the_prepared_batch(tiny_data):
    mesh = sharding.data_mesh(jax.devices()[:1])
    tx = make_optimizer("adam", 1e-3, 10)
    state = init_state(mlp_tiny(num_outputs=2), tx, tiny_data, CornerTask(), mesh, 0)
    # a Dense layer on the 5 x 5 corner, not on the 32 x 32 image
    assert state.params["Dense_0"]["kernel"].shape == (CORNER * CORNER, 8)


def test_train_step_draws_the_batch_from_stream_2_of_the_step_key(tiny_data):
    task = CornerTask()
    state = init_state(mlp_tiny(num_outputs=2), make_optimizer("adam", 1e-3, 10),
                       tiny_data, task, sharding.data_mesh(jax.devices()[:1]), 0)
    state = state.replace(step=jnp.asarray(3, jnp.int32))
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(4, 32, 32, 1)), jnp.float32),
             "label": jnp.array([0, 1, 1, 0]), "valid": jnp.ones(4, bool)}
    key = random_key(11)
    new_state, metrics = jax.jit(lambda s, b, k: train_step(s, b, k, task=task))(
        state, batch, key)
    expected = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, 3), 2))
    assert float(metrics["drawn"]) == float(expected)
    assert float(metrics["train"]) == 1.0 and int(new_state.step) == 4
    per_example, host = jax.jit(lambda s, b: eval_step(s, b, task=task))(state, batch)
    np.testing.assert_array_equal(per_example["train"], 0.0)  # prepared for evaluation
    assert host["probabilities"].shape == (4, 2)
