"""trainer.precision=bf16: the model computes in bfloat16, the state stays
float32, and training tracks float32 training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.optim import make_optimizer
from medjax.engine.state import init_state
from medjax.engine.step import compile_steps, in_precision
from medjax.models.cnn import cnn_tiny
from medjax.runtime import random_key
from medjax.tasks.classification.task import ClassificationTask

STEPS = 30


def train(data, precision):
    task = ClassificationTask().configure(data)
    model = cnn_tiny(num_classes=2)
    tx = make_optimizer("adam", lr=3e-3, total_steps=STEPS, schedule="constant")
    mesh = sharding.data_mesh()
    state = init_state(model, tx, data, task, mesh, seed=0)
    train_fn, eval_fn = compile_steps(task, mesh, precision=precision)
    losses = []
    for batch in pipeline.train_batches(
        data.source("train"), batch_size=data.batch_size, seed=0, start_step=0,
        num_steps=STEPS, convert=data.convert, keys=task.batch_keys,
    ):
        batch = pipeline.to_devices(batch, sharding.batch_sharding(mesh))
        state, metrics = train_fn(state, batch, random_key(1))
        losses.append(float(metrics["loss"]))
        assert metrics["loss"].dtype == jnp.float32
    return state, np.asarray(losses), eval_fn, batch


def test_bf16_training_tracks_fp32(tiny_data):
    _, losses32, _, _ = train(tiny_data, "fp32")
    state16, losses16, eval16, batch = train(tiny_data, "bf16")
    # parameters, BatchNorm statistics and optimizer moments stay float32
    for leaf in jax.tree.leaves((state16.params, state16.batch_stats, state16.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    assert losses32[-1] < losses32[0]  # fp32 learned something
    # bf16 carries 8 bits of mantissa: the curves differ, but not by much
    assert not np.array_equal(losses16, losses32)
    # (measured here: at most 0.0054 apart, the last 10 means within 2e-5)
    np.testing.assert_allclose(losses16[-10:].mean(), losses32[-10:].mean(), rtol=0.01)
    np.testing.assert_allclose(losses16, losses32, atol=0.02)
    per_example, _ = eval16(state16, batch)
    assert per_example["loss"].dtype == jnp.float32


def test_the_model_really_computes_in_bf16():
    seen = {}

    def apply_fn(variables, inputs, train):
        seen["dtypes"] = (variables["params"]["w"].dtype, inputs.dtype)
        return inputs @ variables["params"]["w"]

    variables = {"params": {"w": jnp.ones((3, 2))}}
    out = in_precision(apply_fn, "bf16")(variables, jnp.ones((4, 3)), train=False)
    assert seen["dtypes"] == (jnp.bfloat16, jnp.bfloat16)
    assert out.dtype == jnp.float32
    assert in_precision(apply_fn, "fp32") is apply_fn
    with pytest.raises(ValueError, match="trainer.precision"):
        in_precision(apply_fn, "fp16")
