"""Data parallelism: a step over 4 devices computes what it computes on 1."""

import jax
import numpy as np

from medjax.data import pipeline
from medjax.augment import Augmentation
from medjax.models.cnn import cnn_tiny
from medjax.runtime import random_key
from medjax.tasks.classification.task import ClassificationTask
from medjax.engine import sharding
from medjax.engine.evaluate import evaluate
from medjax.engine.state import init_state
from medjax.engine.optim import make_optimizer
from medjax.engine.step import compile_steps


def run(devices, data, steps=5):
    task = ClassificationTask()
    model = cnn_tiny(num_classes=2)  # BatchNorm: statistics must be global
    tx = make_optimizer("adam", lr=1e-2, total_steps=steps, schedule="constant")
    mesh = sharding.data_mesh(devices)
    state = init_state(model, tx, data, task, mesh, seed=0)
    # augmentation draws per example: the same on 1 device as on 4
    augment = Augmentation(rotation_probability=0.5, rotation_degrees=10, flip_probability=0.5)
    train_fn, eval_fn = compile_steps(task, mesh, augment)
    key = random_key(7)
    batches = pipeline.train_batches(
        data.source("train"), batch_size=data.batch_size, seed=0, start_step=0,
        num_steps=steps, convert=data.convert, keys=task.batch_keys,
    )
    losses, shard_shapes = [], set()
    for batch in batches:
        batch = pipeline.to_devices(batch, sharding.batch_sharding(mesh))
        shard_shapes.add(batch["image"].sharding.shard_shape(batch["image"].shape)[0])
        state, metrics = train_fn(state, batch, key)
        losses.append(float(metrics["loss"]))
    validation = evaluate(eval_fn, state, data, "validation", task, mesh)
    return losses, jax.device_get(state), validation, shard_shapes


def test_four_devices_give_the_losses_of_one(tiny_data):
    assert jax.device_count() == 4
    losses_1, state_1, val_1, shards_1 = run(jax.devices()[:1], tiny_data)
    losses_4, state_4, val_4, shards_4 = run(jax.devices(), tiny_data)
    assert shards_1 == {8} and shards_4 == {2}  # the batch really is split
    assert len(losses_1) == 5
    assert losses_1[0] != losses_1[-1]  # training moved
    np.testing.assert_allclose(losses_4, losses_1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state_4.params), jax.tree.leaves(state_1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state_4.batch_stats), jax.tree.leaves(state_1.batch_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert val_1["num_examples"] == val_4["num_examples"] == 20
    np.testing.assert_allclose(val_4["loss"], val_1["loss"], rtol=1e-5)
    assert val_4["auroc"] == val_1["auroc"]
