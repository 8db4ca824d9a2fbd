"""The non-finite guard: a NaN or inf update never reaches the state or a
checkpoint; ``trainer.on_nonfinite`` stops or skips; split metrics of
non-finite scores are NaN with one warning line."""

import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.checkpoint import Checkpoints
from medjax.engine.loop import check_trainer_options, train
from medjax.engine.nonfinite import NonFiniteGuard
from medjax.engine.optim import make_optimizer
from medjax.engine.state import init_state
from medjax.engine.step import NONFINITE, compile_steps
from medjax.errors import ConfigError, NonFiniteError
from medjax.metrics import average_precision
from medjax.models.cnn import cnn_tiny
from medjax.runtime import random_key
from medjax.tasks.classification.task import ClassificationTask
from medjax.tasks.reconstruction.anomaly import AnomalyTask


@dataclasses.dataclass(frozen=True)
class NaNLossTask(ClassificationTask):
    """Classification whose loss is NaN at every step."""

    def loss(self, outputs, batch):
        loss, per_example = super().loss(outputs, batch)
        return loss * jnp.nan, per_example


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def steps(tiny_data):
    """The guarded and the unguarded step of cnn_tiny (BatchNorm) with AdamW on
    one device, a fresh state, and four training batches."""
    task = ClassificationTask().configure(tiny_data)
    mesh = sharding.data_mesh(jax.devices()[:1])
    tx = make_optimizer("adamw", lr=1e-2, total_steps=8, warmup_steps=2)
    model = cnn_tiny(num_classes=2)
    state = jax.device_get(init_state(model, tx, tiny_data, task, mesh, 0))
    batches = list(pipeline.train_batches(
        tiny_data.source("train"), batch_size=8, seed=0, start_step=0, num_steps=4,
        convert=tiny_data.convert, keys=task.batch_keys,
    ))
    guarded, _ = compile_steps(task, mesh)
    unguarded, _ = compile_steps(task, mesh, guard=False)
    return guarded, unguarded, state, batches


def run_steps(train_fn, state, batches):
    losses = []
    for batch in batches:
        state, metrics = train_fn(state, batch, random_key(1))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state), metrics


def test_the_guard_changes_no_number_of_a_finite_run(steps):
    guarded, unguarded, state, batches = steps
    losses, guarded_state, metrics = run_steps(guarded, state, batches)
    reference, reference_state, _ = run_steps(unguarded, state, batches)
    assert losses == reference  # bit for bit
    assert losses[0] != losses[-1]  # and it learned
    assert leaves_equal(guarded_state, reference_state)
    assert int(metrics[NONFINITE]) == 0


def test_a_nan_batch_leaves_params_statistics_and_optimizer_state_unchanged(steps):
    guarded, _, state, batches = steps
    nan_image = np.full(batches[0]["image"].shape, np.nan, np.float32)
    poisoned = {**batches[0], "image": nan_image}
    new, metrics = guarded(state, poisoned, random_key(1))
    # NaN through BatchNorm: the gradient is NaN; the loss too, unless a fused
    # ReLU (a maxnum on XLA's CPU) turned the NaN activations into zeros
    assert int(metrics[NONFINITE]) in (1, 2)
    assert int(new.step) == int(state.step) + 1  # the data and randomness stay aligned
    for part in ("params", "batch_stats", "opt_state"):
        assert leaves_equal(getattr(new, part), getattr(state, part)), part
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(new)))


def test_an_overflowing_gradient_is_named_as_such(steps):
    guarded, _, state, batches = steps
    # huge weights: a finite (huge) loss whose gradient's norm overflows float32
    huge = state.replace(params=jax.tree.map(lambda p: p * 1e20, state.params))
    new, metrics = guarded(huge, batches[0], random_key(1))
    assert np.isfinite(float(metrics["loss"]))
    assert int(metrics[NONFINITE]) == 2  # the gradient norm
    assert leaves_equal(new.params, huge.params)


def test_skip_counts_runs_of_bad_steps_and_stops_after_max_nonfinite():
    guard = NonFiniteGuard("skip", max_nonfinite=3)
    flags = {1: 1, 2: 2, 3: 0, 4: 2, 5: 2}
    for step, code in flags.items():
        assert guard.check(step, {NONFINITE: jnp.asarray(code)}) is None
    assert guard.check(5, {NONFINITE: jnp.asarray(2)}) is None  # each step counts once
    assert guard.check(6, {NONFINITE: jnp.asarray(2)}) == (
        "steps 4-6: 3 updates in a row skipped (trainer.max_nonfinite=3), the last "
        "for a non-finite training gradient norm"
    )
    stop = NonFiniteGuard("stop")
    assert stop.check(1, {NONFINITE: jnp.asarray(0)}) is None
    assert stop.check(2, {NONFINITE: jnp.asarray(1)}) == (
        "step 2: the training loss is not finite (NaN or inf)"
    )
    assert stop.check_validation(4, {"loss": float("nan"), "auroc": 0.5}) == (
        "step 4: the validation loss is not finite (nan)"
    )
    assert stop.check_validation(4, {"loss": 0.3, "auroc": float("nan")}) is None


@pytest.mark.parametrize("option, value, message", [
    ("on_nonfinite", "ignore",
     "trainer.on_nonfinite: expected 'stop' or 'skip', got 'ignore'"),
    ("max_nonfinite", 0, "trainer.max_nonfinite: expected a positive integer, got 0"),
])
def test_bad_guard_options_are_one_line_errors(option, value, message):
    with pytest.raises(ConfigError) as error:
        check_trainer_options(
            max_steps=4, eval_every=2, checkpoint_every=2, **{option: value}
        )
    assert str(error.value) == message


def restore_all(run_dir, template):
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), best_metric="auroc")
    steps = list(checkpoints.manager.all_steps())
    states = {s: jax.device_get(checkpoints.restore(template, s)) for s in steps}
    best, latest = checkpoints.best_step(), checkpoints.latest_step()
    checkpoints.close()
    return states, best, latest


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_stop_ends_at_the_first_bad_step_and_saves_no_poisoned_checkpoint(
    tiny_data, tmp_path
):
    model, task = cnn_tiny(num_classes=2), ClassificationTask()
    tx = make_optimizer("sgd", lr=1e30, total_steps=6, schedule="constant")
    with pytest.raises(NonFiniteError) as error:
        train(task=task, model=model, tx=tx, data=tiny_data, run_dir=str(tmp_path),
              max_steps=6, eval_every=1, checkpoint_every=1, log_every=1,
              best_metric="auroc", progress=False)
    # step 1's gradient is finite; its update makes the weights ~1e30
    assert str(error.value) == (
        "step 2: the training gradient norm is not finite (NaN or inf); stopped "
        "without saving it: the latest checkpoint, step 1, is the last good one; try "
        "a lower optim.lr, gradient clipping (e.g. optim.grad_clip_norm=1.0) or "
        "higher precision"
    )
    template = init_state(model, tx, tiny_data, task.configure(tiny_data),
                          sharding.data_mesh(), 0)
    states, best, latest = restore_all(tmp_path, template)
    assert sorted(states) == [1] and best == latest == 1
    for state in states.values():
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
    log = records(tmp_path)
    assert [(r["step"], r["split"]) for r in log] == [
        (1, "train"), (1, "validation"), (2, "train")
    ]
    assert not os.path.exists(os.path.join(tmp_path, "summary.json"))


def test_skip_leaves_the_state_unchanged_counts_and_stops_after_max_nonfinite(
    tiny_data, tmp_path
):
    model, task = cnn_tiny(num_classes=2), NaNLossTask()
    tx = make_optimizer("adam", lr=1e-2, total_steps=6, schedule="constant")
    with pytest.raises(NonFiniteError, match=(
        r"^steps 1-3: 3 updates in a row skipped \(trainer.max_nonfinite=3\), the last "
        r"for a non-finite training loss; stopped without saving it: the latest "
        r"checkpoint, step 2, is the last good one; try a lower optim.lr"
    )):
        train(task=task, model=model, tx=tx, data=tiny_data, run_dir=str(tmp_path),
              max_steps=6, eval_every=5, checkpoint_every=2, log_every=1,
              on_nonfinite="skip", max_nonfinite=3, progress=False)
    template = init_state(model, tx, tiny_data, task.configure(tiny_data),
                          sharding.data_mesh(), 0)
    states, _, _ = restore_all(tmp_path, template)
    assert sorted(states) == [2]
    assert int(states[2].step) == 2  # the step counter advanced...
    for part in ("params", "batch_stats", "opt_state"):  # ...nothing else did
        initial = jax.device_get(getattr(template, part))
        assert leaves_equal(getattr(states[2], part), initial), part
    log = records(tmp_path)
    assert [(r["step"], r["nonfinite_steps"]) for r in log] == [(1, 1), (2, 1), (3, 1)]


def test_split_metrics_of_nonfinite_scores_are_nan_with_one_warning(tmp_path, caplog):
    task = ClassificationTask()
    probabilities = np.full((6, 2), np.nan, np.float32)
    labels = np.array([0, 1, 0, 1, 1, 0])
    outputs = {"probabilities": probabilities, "label": labels}
    with caplog.at_level(logging.WARNING, logger="medjax"):
        result = task.split_metrics(outputs)
    assert np.isnan(result["auroc"])
    assert [r.getMessage() for r in caplog.records] == [
        "6 of 6 examples have non-finite class probabilities (NaN or inf): auroc "
        "reported as NaN; the model's outputs are not finite (diverged parameters?)"
    ]
    # the figures of such an evaluation are drawn (scikit-learn's ROC refused NaN)
    task.draw_cases(outputs, str(tmp_path / "validation.png"), title="validation")
    assert os.path.isfile(tmp_path / "validation_roc.png")
    scores = np.array([np.nan, 0.9, 0.1, 0.8])
    assert np.isnan(average_precision(scores, np.array([1, 0, 1, 1])))
    labels = np.array([1, 0, 1, 1])
    maps = np.full((4, 3, 3), np.nan, np.float32)  # a diverged model's maps
    lesions = np.zeros((4, 3, 3), np.uint8)
    lesions[0, 1, 1] = 1
    result = AnomalyTask().split_metrics({
        "score": scores, "label": labels, "anomaly_map": maps, "lesion_mask": lesions,
        "inside": np.ones((4, 3, 3), np.uint8),
    })
    assert np.isnan(result["auroc"]) and np.isnan(result["auprc"])
    assert np.isnan(result["pixel_auroc"]) and np.isnan(result["pixel_auprc"])
