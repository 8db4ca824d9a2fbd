import jax.numpy as jnp
import numpy as np
import pytest

from medjax.tasks.classification import ClassificationTask


def test_padding_does_not_change_the_loss():
    task = ClassificationTask()
    logits = jnp.array([[1.0, -1.0], [0.5, 2.0], [9.0, -9.0]])
    batch = {"label": jnp.array([0, 1, 1]), "valid": jnp.array([True, True, False])}
    loss, per_example = task.loss(logits, batch)
    only_valid, _ = task.loss(logits[:2], {"label": batch["label"][:2], "valid": jnp.ones(2, bool)})
    assert float(loss) == pytest.approx(float(only_valid), rel=1e-6)
    assert per_example["loss"][2] == 0 and per_example["accuracy"].tolist() == [1, 1, 0]


def test_split_metrics_binary():
    task = ClassificationTask()
    outputs = {
        "probabilities": np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]),
        "label": np.array([0, 1, 0, 1]),
    }
    result = task.split_metrics(outputs)
    # positives score 0.4, 0.8; negatives 0.1, 0.7 -> 3 of 4 pairs ordered
    assert result["auroc"] == 0.75
    assert result["sensitivity"] == 0.5 and result["specificity"] == 0.5


def test_host_outputs_are_probabilities():
    task = ClassificationTask(num_classes=3)
    logits = jnp.array([[0.0, 0.0, np.log(2.0)]])
    out = task.host_outputs(logits, {"label": jnp.array([2])})
    np.testing.assert_allclose(out["probabilities"], [[0.25, 0.25, 0.5]], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"positive_class": 2}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match="task."):
        ClassificationTask(**kwargs)
