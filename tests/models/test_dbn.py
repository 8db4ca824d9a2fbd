"""DBN: greedy pretraining, exact weight copies, end-to-end fine-tuning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.models.dbn import DBNClassifier, copy_rbm_weights, save_rbm_stack
from medjax.models.rbm import RBM
from medjax.engine.pretraining import pretrain_dbn
from medjax.runtime import random_key


@pytest.fixture(scope="module")
def pretrained():
    images = np.random.default_rng(0).random((48, 4, 5, 1)).astype(np.float32)
    rbms = [RBM(num_hidden=6), RBM(num_hidden=3)]
    layers, histories = pretrain_dbn(
        rbms, images, tx=optax.sgd(0.1), epochs=2, batch_size=8, key=random_key(0),
        threshold=0.5,
    )
    return images, layers, histories


def test_greedy_stack_shapes(pretrained):
    _, layers, histories = pretrained
    assert [v["params"]["kernel"].shape for v in layers] == [(20, 6), (6, 3)]
    assert len(histories) == 2 and len(histories[0]) == 2
    assert all(np.isfinite(h[-1]["loss"]) for h in histories)


def test_weights_are_copied_exactly(pretrained, tmp_path):
    images, layers, _ = pretrained
    model = DBNClassifier(num_classes=3, hidden_sizes=(6, 3), threshold=0.5)
    params = model.init(random_key(1), images[:1], train=False)["params"]
    copied = copy_rbm_weights(params, layers)
    path = str(tmp_path / "stack.npz")
    save_rbm_stack(path, layers)
    loaded = DBNClassifier(num_classes=3, hidden_sizes=(6, 3), threshold=0.5, pretrained=path)
    from_file = loaded.init(random_key(1), images[:1], train=False)["params"]
    for index, rbm in enumerate(layers):
        for tree in (copied, from_file):
            np.testing.assert_array_equal(tree[f"layer_{index}"]["kernel"], rbm["params"]["kernel"])
            np.testing.assert_array_equal(tree[f"layer_{index}"]["bias"], rbm["params"]["hidden_bias"])
    np.testing.assert_array_equal(copied["head"]["kernel"], params["head"]["kernel"])

    # Layer l is RBM l's p(h | v): the logits by hand from the RBMs' weights.
    x = (images[:5].reshape(5, -1) > 0.5).astype(np.float32)
    for rbm in layers:
        p = rbm["params"]
        x = 1 / (1 + np.exp(-(x @ np.asarray(p["kernel"]) + np.asarray(p["hidden_bias"]))))
    expected = x @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])
    logits = model.apply({"params": copied}, images[:5], train=False)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)

    wrong = DBNClassifier(num_classes=3, hidden_sizes=(6,), pretrained=path)
    with pytest.raises(ValueError, match="^model.pretrained"):
        wrong.init(random_key(1), images[:1], train=False)


def test_fine_tuning_updates_every_layer(pretrained, tmp_path):
    """One step of the engine's train_step with ClassificationTask changes the
    pretrained layers too (end to end), not only the head."""
    from medjax.engine.state import create_train_state
    from medjax.engine.step import train_step
    from medjax.tasks.classification.task import ClassificationTask

    images, layers, _ = pretrained
    path = str(tmp_path / "stack.npz")
    save_rbm_stack(path, layers)
    model = DBNClassifier(num_classes=2, hidden_sizes=(6, 3), threshold=0.5, pretrained=path)
    state = create_train_state(model, optax.sgd(1.0), images[:1], random_key(0))
    batch = {
        "image": images[:16], "label": np.arange(16, dtype=np.int32) % 2,
        "valid": np.ones(16, bool),
    }
    new, metrics = jax.jit(lambda s, b: train_step(s, b, random_key(1), task=ClassificationTask()))(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    for name in ("layer_0", "layer_1", "head"):
        assert not np.allclose(new.params[name]["kernel"], state.params[name]["kernel"])
