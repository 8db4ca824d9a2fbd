"""Stopping and resuming repeats exactly what an uninterrupted run does: for a CNN
on the torso phantoms and for a CNN-LSTM on the cine phantoms (the recurrent
carry and the per-sequence augmentation must come back exactly too)."""

import json
import os

import jax
import numpy as np
import pytest

from medjax.augment import Augmentation
from medjax.engine import sharding
from medjax.engine.checkpoint import Checkpoints
from medjax.engine.loop import train
from medjax.engine.optim import make_optimizer
from medjax.engine.state import init_state
from medjax.models.cnn import cnn_tiny
from medjax.models.sequence import cnn_lstm_tiny
from medjax.tasks.classification.task import ClassificationTask
from medjax.tasks.sequence import SequenceClassificationTask

N = 5  # 8 steps an epoch on the torso phantoms, 2 on the cine ones: resuming at 5
# and running to 10 crosses an epoch
AUGMENT = Augmentation(
    rotation_probability=0.5, rotation_degrees=10, noise_probability=0.5,
    noise_std_range=(0.0, 0.05),
)
# One in-plane transform per cine and a cyclic phase shift: randomness per sequence.
CINE_AUGMENT = Augmentation(
    rotation_probability=0.5, rotation_degrees=10, phase_shift_probability=0.5,
)
# name: (task, model (dropout: randomness in the step), data fixture, augmentation)
SETUPS = {
    "cnn": (
        ClassificationTask,
        lambda: cnn_tiny(num_classes=2, dropout_rate=0.3),
        "tiny_data",
        AUGMENT,
    ),
    "cnn_lstm": (
        SequenceClassificationTask,
        lambda: cnn_lstm_tiny(num_outputs=2, dropout_rate=0.3),
        "tiny_cine",
        CINE_AUGMENT,
    ),
}


def build(setup):
    task, model, _, augment = SETUPS[setup]
    return task(), model(), augment


def train_to(run_dir, data, max_steps, setup):
    task, model, augment = build(setup)
    return train(
        task=task,
        model=model,
        tx=make_optimizer("adamw", lr=1e-2, total_steps=2 * N, warmup_steps=2),
        data=data, run_dir=str(run_dir), max_steps=max_steps, eval_every=N,
        augment=augment,  # randomness in the data too
        checkpoint_every=3, log_every=1, best_metric="auroc", progress=False,
    )


def final_state(run_dir, data, step, setup):
    task, model, _ = build(setup)
    tx = make_optimizer("adamw", lr=1e-2, total_steps=2 * N, warmup_steps=2)
    template = init_state(model, tx, data, task, sharding.data_mesh(), seed=0)
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"))
    assert checkpoints.latest_step() == step
    state = jax.device_get(checkpoints.restore(template, step))
    checkpoints.close()
    return state


def train_losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]


@pytest.fixture(scope="module", params=list(SETUPS))
def case(request):
    return request.param, request.getfixturevalue(SETUPS[request.param][2])


@pytest.fixture(scope="module")
def runs(case, tmp_path_factory):
    name, data = case
    straight = tmp_path_factory.mktemp(f"straight_{name}")
    resumed = tmp_path_factory.mktemp(f"resumed_{name}")
    train_to(straight, data, 2 * N, name)
    train_to(resumed, data, N, name)
    assert final_state(resumed, data, N, name).step == N
    # an interrupted run may have logged past its last checkpoint: dropped on resume
    with open(os.path.join(resumed, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": N + 1, "split": "train", "loss": 123.0}) + "\n")
    train_to(resumed, data, 2 * N, name)
    return straight, resumed


def test_resumed_parameters_are_identical(runs, case):
    name, data = case
    straight, resumed = (final_state(r, data, 2 * N, name) for r in runs)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_resumed_losses_are_identical(runs):
    straight, resumed = (train_losses(r) for r in runs)
    assert [s for s, _ in straight] == list(range(1, 2 * N + 1))
    assert straight == resumed


def test_best_and_latest_checkpoints_are_kept(runs):
    run_dir = runs[0]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    steps = sorted(int(d) for d in os.listdir(os.path.join(run_dir, "checkpoints")) if d.isdigit())
    validation = [r for r in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl")))
                  if r["split"] == "validation"]
    best = max(validation, key=lambda r: r["auroc"])
    assert summary["best"]["step"] == best["step"] == summary["best_checkpoint_step"]
    # the latest two (9 and 10) and the best are kept; the rest are deleted
    assert steps == sorted({9, 10, best["step"]})
