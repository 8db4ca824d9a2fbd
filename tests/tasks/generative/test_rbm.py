"""RBMTask: inputs, the CD loss with padding, figures, and a run of the engine."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data import schema as roles
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.generative import RBMTask
from medjax.viz.generative import save_image_grid


def test_inputs_binarise_or_standardise():
    images = np.array([[[-1.0, 0.0], [0.25, 1.0]]], np.float32)[..., None]  # [1, 2, 2, 1]
    np.testing.assert_array_equal(RBMTask().inputs({"image": images})[0, ..., 0], [[0, 0], [1, 1]])
    np.testing.assert_array_equal(
        RBMTask(threshold=-0.5).inputs({"image": images})[0, ..., 0], [[0, 1], [1, 1]]
    )
    np.testing.assert_array_equal(RBMTask(threshold=None).inputs({"image": images}), images)
    standard = np.asarray(RBMTask(visible="gaussian").inputs({"image": images}))
    np.testing.assert_allclose([standard.mean(), standard.std()], [0.0, 1.0], atol=1e-6)


def test_loss_averages_valid_examples_only():
    task = RBMTask(threshold=0.5)
    batch = {
        "image": np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [9.0, 9.0]], np.float32),
        "valid": np.array([True, True, True, False]),
    }
    outputs = {
        "free_energy": jnp.array([-1.0, -2.0, -3.0, 100.0]),
        "free_energy_model": jnp.array([-0.5, -1.0, -1.5, 100.0]),
        "reconstruction": jnp.full((4, 2), 0.25),
    }
    loss, per_example = task.loss(outputs, batch)
    # mean(-1, -2, -3) - mean(-0.5, -1, -1.5) = -2 + 1 = -1; padding ignored.
    np.testing.assert_allclose(loss, -1.0)
    np.testing.assert_allclose(per_example["loss"][:3], [0.0, -1.0, -2.0])
    # (1 - 0.25)^2 and 0.25^2 averaged over the two pixels.
    np.testing.assert_allclose(
        per_example["reconstruction_error"][:3], [0.3125, 0.5625, 0.0625]
    )
    # A persistent chain has its own size: a plain mean over its particles.
    outputs["free_energy_model"] = jnp.array([-1.0, -3.0, -2.0, -2.0, -2.0])
    loss, _ = task.loss(outputs, batch)
    np.testing.assert_allclose(loss, 0.0)


def test_needs_an_image_field():
    assert RBMTask(image_key="mr_image").batch_keys == ("mr_image",)
    assert RBMTask().batch_roles() == (("image", roles.image()),)
    tabular = type("Data", (), {"schema": {"features": roles.TABULAR}, "name": "breast_cancer"})
    with pytest.raises(TaskDataMismatch, match="task=RBMTask needs an? image field 'image'"):
        RBMTask().configure(tabular())


def test_primary_metric_and_options():
    assert RBMTask().primary_metric == "pseudo_log_likelihood"
    assert RBMTask(visible="gaussian").primary_metric == "reconstruction_r2"
    with pytest.raises(ValueError, match="^task.visible"):
        RBMTask(visible="poisson")


def test_draw_cases_and_grid_write_pngs(tmp_path):
    task = RBMTask(num_figure_cases=3)
    outputs = {"visible": np.zeros((5, 4, 4, 1)), "reconstruction": np.ones((5, 4, 4, 1))}
    path = tmp_path / "figures" / "cases.png"
    task.draw_cases(outputs, str(path), title="validation")
    save_image_grid(np.random.default_rng(0).random((6, 16)), str(tmp_path / "grid.png"), columns=3)
    for written in (path, tmp_path / "grid.png"):
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pcd_rbm_trains_through_the_engine(tiny_data, tmp_path):
    """The ordinary training loop: the validation pseudo-likelihood beats an
    untrained RBM's (zero weights and biases: -D log 2 for D = 32 x 32)."""
    import optax

    from medjax.models.rbm import RBM
    from medjax.engine.loop import train

    task = RBMTask()
    summary = train(
        task=task, model=RBM(num_hidden=16, persistent=True, num_chains=8), tx=optax.adam(1e-2),
        data=tiny_data, run_dir=str(tmp_path), max_steps=24, eval_every=24,
        checkpoint_every=24, best_metric=task.primary_metric, progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["pseudo_log_likelihood"] > -1024 * np.log(2.0) + 100
    assert summary["best"]["pseudo_log_likelihood"] == validation["pseudo_log_likelihood"]
    assert os.path.exists(tmp_path / "figures" / "validation_step_000024.png")
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"loss", "reconstruction_error"} <= set(records[0])
