"""The description task: tokens from the phantoms' lesion fields, the
teacher-forced loss on hand-computed logits, the roles and spacing it reads, and
a tiny run on 4 forced devices with the engine's train."""

import os

import jax
import numpy as np
import pytest
import scipy.special

from medjax.data.datasets.phantoms import torso_schema
from medjax.errors import ConfigError
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.description import DescriptionTask


def data_with(schema, spacing=(6.25, 6.25), name="phantoms"):
    return type("Data", (), {"schema": schema, "spacing": spacing, "name": name})()


def test_configure_reads_the_spacing_and_the_lesion_roles():
    task = DescriptionTask().configure(data_with(torso_schema()))
    assert task.spacing_mm == 6.25
    assert (
        DescriptionTask(spacing_mm=3.0).configure(data_with(torso_schema())).spacing_mm
        == 3.0
    )
    with pytest.raises(ConfigError, match="needs the pixel spacing in mm"):
        DescriptionTask().configure(data_with(torso_schema(), spacing=None))
    schema = {k: v for k, v in torso_schema().items() if k != "lesion_radii"}
    with pytest.raises(TaskDataMismatch, match="needs a target field 'lesion_radii'"):
        DescriptionTask().configure(data_with(schema))
    with pytest.raises(ValueError, match="vocabulary of 23 tokens, got 20"):
        DescriptionTask(vocab_size=20)
    with pytest.raises(ValueError, match="task.decoding"):
        DescriptionTask(decoding="sampling")


def test_tokens_inputs_and_the_teacher_forced_loss_over_valid_tokens():
    task = DescriptionTask(spacing_mm=6.25)
    batch = {
        "image": np.zeros((2, 4, 4, 1), np.float32),
        "lesion_types": np.array([[0, 0, 0], [1, 3, 0]]),
        "lesion_radii": np.array([[0.0, 0.0, 0.0], [3.2, 1.0, 0.0]], np.float32),
        "lesion_valid": np.array([[False] * 3, [True, True, False]]),
        "valid": np.array([True, True]),
    }
    # Jitted, as in the engine's steps; the test's own arrays are numpy (one
    # compile each instead of one per eager operation).
    prepare = jax.jit(lambda batch: task.prepare_batch(None, batch, train=True))
    prepared = jax.device_get(prepare(batch))
    loss = jax.jit(task.loss)
    coder = task.coder
    assert [coder.text(t) for t in prepared["tokens"]] == [
        "no lesion",
        "hypodense liver lesion , 40 mm ; 2 lesions",
    ]
    _, inputs = task.inputs(prepared)
    np.testing.assert_array_equal(inputs, prepared["tokens"][:, :-1])
    targets = prepared["tokens"][:, 1:]  # 3 and 10 tokens before the padding
    # Logits that put log-probability log(1/2) on every target, the rest spread.
    vocab = coder.vocab_size
    spread = np.log(0.5 / (vocab - 1))
    logits = np.full((2, 11, vocab), spread, np.float32)
    logits[np.arange(2)[:, None], np.arange(11), targets] = np.log(0.5)
    _, per_example = loss(logits, prepared)
    np.testing.assert_allclose(per_example["loss"], [np.log(2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(per_example["token_accuracy"], [1.0, 1.0])
    # The first slice's first target (the word "no") gets probability 1/4, and the
    # word "lesions" (id 5) the other 1/4 (still normalised) and the argmax.
    worse = logits.copy()
    worse[0, 0, targets[0, 0]] = np.log(0.25)
    worse[0, 0, 5] = np.log(0.25 + 0.5 / (vocab - 1))
    _, per_example = loss(scipy.special.log_softmax(worse, axis=-1), prepared)
    expected = (np.log(4) + 2 * np.log(2)) / 3
    np.testing.assert_allclose(per_example["loss"][0], expected, rtol=1e-4)
    assert float(per_example["token_accuracy"][0]) == pytest.approx(2 / 3)


def test_describes_end_to_end_on_four_devices(tiny_data, tmp_path):
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer
    from medjax.models.sequence.captioner import captioner_tiny

    assert jax.device_count() == 4
    task = DescriptionTask(num_cases=2)  # greedy: beam search is the model tests'
    # One backbone stage and 4-unit widths: smaller programs compile faster.
    model = captioner_tiny(
        vocab_size=task.coder.vocab_size,
        max_length=task.max_length,
        widths=(4,),
        embed_dim=4,
        features=4,
    )
    summary = train(
        task=task,
        model=model,
        tx=make_optimizer("adam", lr=1e-3, total_steps=2),
        data=tiny_data,
        run_dir=str(tmp_path / "run"),
        max_steps=2,
        eval_every=2,
        checkpoint_every=2,
        best_metric=task.primary_metric,
        log_every=1,
        progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 20
    for name in ("loss", "token_accuracy", "exact_match", "bleu4", "count_accuracy"):
        assert np.isfinite(validation[name]), name
    assert "validation_step_000002_findings.png" in os.listdir(
        tmp_path / "run" / "figures"
    )
