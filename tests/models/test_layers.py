"""The shared layers module: the factories' choices, and that moving every model
onto them kept parameter names, initial values and outputs (fingerprints recorded
before the move, see ``fingerprints.py``)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import layers
from medjax.runtime import random_key
from tests.models import fingerprints

with open(os.path.join(os.path.dirname(__file__), "fingerprints.json")) as f:
    RECORDED = json.load(f)
CASES = fingerprints.cases()
# Values of these are compared (one per factory path: group size, batch with
# frozen stages and projections, the adapted group count of the U-Net's Norm,
# the autoencoders). All 19 cases matched once, when the models moved onto the
# factories (rtol 1e-5); the other 15 compile for minutes, so only their shapes
# are checked here.
QUICK = {
    "cnn_tiny_group",
    "resnet_tiny_frozen1",
    "unet_tiny_group_resize",
    "autoencoder_tiny_batch",
}


def _shapes(model, shape):
    """Paths and shapes of what ``fingerprints.fingerprint`` summarises, traced
    only (nothing compiles)."""
    x = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        shape,
        is_leaf=lambda s: isinstance(s, tuple) and isinstance(s[0], int),
    )

    def run(x):
        variables = model.init(random_key(0), x, train=False)
        rngs = {"dropout": random_key(1), "sample": random_key(2)}
        trained, updates = model.apply(
            variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
        )
        return (
            dict(variables),
            model.apply(variables, x, train=False),
            trained,
            dict(updates),
        )

    parts = jax.eval_shape(run, x)
    return {
        part: {
            path: list(leaf[0])
            for path, leaf in fingerprints._summary(
                jax.tree.map(lambda a: np.zeros(a.shape, np.float32), tree)
            ).items()
        }
        for part, tree in zip(("variables", "eval", "train", "updates"), parts)
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_and_output_shapes_are_those_recorded_before_the_move(name):
    expected = {
        part: {path: leaf[0] for path, leaf in summary.items()}
        for part, summary in RECORDED[name].items()
    }
    assert _shapes(*CASES[name]) == expected


@pytest.mark.parametrize("name", sorted(QUICK))
def test_parameters_and_outputs_are_those_recorded_before_the_move(name):
    model, shape = CASES[name]
    got, expected = fingerprints.fingerprint(model, shape), RECORDED[name]
    assert got.keys() == expected.keys()
    for part in expected:
        # Same paths and shapes exactly; sums to float32 round-off.
        assert got[part].keys() == expected[part].keys(), (name, part)
        for path, (shape_, total, absolute) in expected[part].items():
            assert got[part][path][0] == shape_, (name, part, path)
            np.testing.assert_allclose(
                got[part][path][1:],
                [total, absolute],
                rtol=1e-5,
                atol=1e-5,
                err_msg=f"{name} {part} {path}",
            )


class Probe(nn.Module):
    kind: str
    num_groups: int | None = None

    @nn.compact
    def __call__(self, x, *, train):
        return layers.normalization(self.kind, train=train, num_groups=self.num_groups)(
            x
        )


def test_group_norm_by_group_size_and_by_adapted_group_count():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 8)), jnp.float32)
    # group_size 4: two groups of 4 channels, each normalised over space and
    # its channels (scale 1, bias 0 at init).
    out = Probe("group").apply(
        Probe("group").init(random_key(0), x, train=False), x, train=False
    )
    group = np.asarray(x)[..., 4:].reshape(2, -1)
    expected = (group - group.mean(1, keepdims=True)) / np.sqrt(
        group.var(1, keepdims=True) + 1e-6
    )
    np.testing.assert_allclose(
        np.asarray(out)[..., 4:].reshape(2, -1), expected, rtol=1e-4, atol=1e-4
    )
    # Norm: at most 3 groups of a width of 8 becomes 2 groups (largest divisor).
    norm = layers.Norm("group", num_groups=3)
    adapted = norm.apply(norm.init(random_key(0), x, train=False), x, train=False)
    np.testing.assert_allclose(adapted, out, rtol=1e-5, atol=1e-5)
    assert layers.largest_divisor_at_most(12, 5) == 4
    assert layers.largest_divisor_at_most(12, 8) == 6
    assert layers.largest_divisor_at_most(16, 8) == 8
    assert layers.largest_divisor_at_most(4, 8) == 4
    assert layers.largest_divisor_at_most(7, 8) == 7
    assert layers.largest_divisor_at_most(14, 4) == 2


def test_batch_norm_uses_batch_statistics_only_in_training():
    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, size=(6, 4)), jnp.float32)
    probe = Probe("batch")
    variables = probe.init(random_key(0), x, train=False)
    # Fresh running statistics (mean 0, var 1): evaluation is nearly the identity.
    np.testing.assert_allclose(
        probe.apply(variables, x, train=False), x / np.sqrt(1 + 1e-5), rtol=1e-5
    )
    trained, _ = probe.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(trained).mean(0), 0.0, atol=1e-5)


def test_none_is_the_identity_and_unknown_names_fail():
    x = jnp.ones((1, 3))
    probe = Probe("none")
    variables = probe.init(random_key(0), x, train=False)
    assert not variables
    np.testing.assert_array_equal(probe.apply(variables, x, train=False), x)
    with pytest.raises(ValueError, match="model.norm: expected one of"):
        layers.normalization("layer", train=False)
    with pytest.raises(ValueError, match="model.activation: expected one of"):
        layers.activation("swish2")
    np.testing.assert_array_equal(
        layers.activation("relu")(jnp.array([-1.0, 2.0])), [0.0, 2.0]
    )
