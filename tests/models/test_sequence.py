import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import sequence
from medjax.models.cnn import ConvBackbone, cnn_tiny
from medjax.models.sequence import RecurrentEncoder, SequenceClassifier
from medjax.models.weights import copy_weights
from medjax.runtime import random_key


def random_variables(module, x, scale=0.5):
    """Random variables of ``module`` for inputs like ``x``: parameters from
    N(0, scale), running means near 0 and variances in [0.5, 1.5].

    Faster than ``init``, whose orthogonal recurrent kernels take seconds to
    compile, and no bias is zero (flax starts them there), so every term of a
    reference computation counts.
    """
    shapes = jax.eval_shape(lambda: module.init(random_key(0), x, train=False))
    rng = np.random.default_rng(1)

    def draw(path, a):
        if path[-1].key == "var":
            values = rng.uniform(0.5, 1.5, a.shape)
        elif path[-1].key == "mean":
            values = 0.1 * rng.normal(size=a.shape)
        else:
            values = scale * rng.normal(size=a.shape)
        return jnp.asarray(values, a.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def random_params(module, x):
    return random_variables(module, x)["params"]


def evaluate(module):
    """``module.apply(variables, x, train=False, ...)``, jitted (one compilation
    instead of one per operation)."""
    return jax.jit(functools.partial(module.apply, train=False))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def dense(params, name, x):
    layer = params[name]
    return x @ np.asarray(layer["kernel"], np.float64) + np.asarray(
        layer.get("bias", 0.0), np.float64
    )


def numpy_step(cell, params, x, carry):
    """One step of flax's cell, written out: x [B, F], carry as flax keeps it."""
    if cell == "lstm":
        c, h = carry
        i = sigmoid(dense(params, "ii", x) + dense(params, "hi", h))
        f = sigmoid(dense(params, "if", x) + dense(params, "hf", h))
        g = np.tanh(dense(params, "ig", x) + dense(params, "hg", h))
        o = sigmoid(dense(params, "io", x) + dense(params, "ho", h))
        c = f * c + i * g
        h = o * np.tanh(c)
        return (c, h), h
    if cell == "gru":
        h = carry
        r = sigmoid(dense(params, "ir", x) + dense(params, "hr", h))
        z = sigmoid(dense(params, "iz", x) + dense(params, "hz", h))
        n = np.tanh(dense(params, "in", x) + r * dense(params, "hn", h))
        h = (1 - z) * n + z * h
        return h, h
    h = np.tanh(dense(params, "i", x) + dense(params, "h", carry))
    return h, h


def numpy_rnn(cell, params, x):
    """Step-by-step reference over x [B, T, F] from a zero carry -> [B, T, H]."""
    features = params["hi" if cell == "lstm" else "hn" if cell == "gru" else "h"]
    hidden = np.asarray(features["kernel"]).shape[0]
    zeros = np.zeros((x.shape[0], hidden))
    carry = (zeros, zeros) if cell == "lstm" else zeros
    outputs = []
    for t in range(x.shape[1]):
        carry, h = numpy_step(cell, params, np.asarray(x[:, t], np.float64), carry)
        outputs.append(h)
    return np.stack(outputs, axis=1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stacked_layers_equal_a_numpy_step_by_step_reference(cell):
    x = jax.random.normal(random_key(0), (2, 5, 3))
    encoder = RecurrentEncoder(cell, features=4, num_layers=2, return_sequences=True)
    params = random_params(encoder, x)
    expected = numpy_rnn(cell, params["layer0"]["cell"], np.asarray(x))
    expected = numpy_rnn(cell, params["layer1"]["cell"], expected)
    got = evaluate(encoder)({"params": params}, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    summary = evaluate(encoder.clone(return_sequences=False))({"params": params}, x)
    np.testing.assert_allclose(summary, expected[:, -1], rtol=1e-5, atol=1e-5)


def loss_and_grads(encoder, params, x, lengths, weights):
    """``sum(output * weights)``'s gradients w.r.t. params and inputs, and the
    output."""

    def loss(params, x):
        out = encoder.apply({"params": params}, x, seq_lengths=lengths, train=False)
        return jnp.sum(out * weights), out

    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x)


@pytest.mark.parametrize(
    "cell, bidirectional, num_layers, return_sequences",
    [("lstm", True, 1, False), ("gru", False, 2, True)],
)
def test_padded_steps_change_no_output_and_no_gradient(
    cell, bidirectional, num_layers, return_sequences
):
    steps, valid = 7, 4
    sequence_alone = jax.random.normal(random_key(0), (1, valid, 3))
    # the same sequence twice, padded with different values
    padding = jax.random.normal(random_key(3), (2, steps - valid, 3)) * 3
    x = jnp.concatenate([jnp.repeat(sequence_alone, 2, axis=0), padding], axis=1)
    encoder = RecurrentEncoder(
        cell, 4, num_layers, bidirectional, return_sequences=return_sequences
    )
    params = random_params(encoder, x)
    width = encoder.output_features
    weights = jax.random.normal(random_key(2), (valid, width))
    if return_sequences:  # the weights of padded steps are not zero either
        weights = jnp.concatenate([weights, jnp.ones((steps - valid, width))])[None]
        alone_weights = weights[:, :valid]
    else:
        weights = alone_weights = weights[:1]

    lengths = jnp.array([valid, valid])
    (grad_params, grad_x), out = loss_and_grads(encoder, params, x, lengths, weights)
    (params_alone, x_alone), out_alone = loss_and_grads(
        encoder, params, sequence_alone, None, alone_weights
    )

    for b in range(2):
        if return_sequences:
            np.testing.assert_allclose(out[b, :valid], out_alone[0], atol=1e-6)
            np.testing.assert_array_equal(out[b, valid:], 0.0)
        else:
            np.testing.assert_allclose(out[b], out_alone[0], atol=1e-6)
        np.testing.assert_allclose(grad_x[b, :valid], x_alone[0], atol=1e-6)
        np.testing.assert_array_equal(grad_x[b, valid:], 0.0)
    for got, alone in zip(jax.tree.leaves(grad_params), jax.tree.leaves(params_alone)):
        np.testing.assert_allclose(got, 2 * alone, rtol=1e-5, atol=1e-6)
    # not vacuous: the padding would change the output if the lengths were ignored
    unmasked = evaluate(encoder)({"params": params}, x)
    assert not np.allclose(unmasked[0], out[0], atol=1e-3)


def test_bidirectional_encoder_reverses_only_the_valid_steps():
    steps, lengths = 6, (3, 6)
    x = np.asarray(jax.random.normal(random_key(0), (2, steps, 3)))
    encoder = RecurrentEncoder("lstm", 4, bidirectional=True, return_sequences=True)
    params = random_params(encoder, x)["layer0"]
    variables = {"params": {"layer0": params}}
    sequences = evaluate(encoder)(variables, x, seq_lengths=jnp.array(lengths))
    summary = evaluate(encoder.clone(return_sequences=False))(
        variables, x, seq_lengths=jnp.array(lengths)
    )
    for b, length in enumerate(lengths):
        valid = x[b : b + 1, :length]
        forward = numpy_rnn("lstm", params["forward_rnn"]["cell"], valid)[0]
        # by hand: the backward cell reads the valid steps last to first
        backward = numpy_rnn("lstm", params["backward_rnn"]["cell"], valid[:, ::-1])[0]
        np.testing.assert_allclose(sequences[b, :length, :4], forward, atol=1e-5)
        np.testing.assert_allclose(sequences[b, :length, 4:], backward[::-1], atol=1e-5)
        np.testing.assert_array_equal(sequences[b, length:], 0.0)
        np.testing.assert_allclose(summary[b, :4], forward[-1], atol=1e-5)
        np.testing.assert_allclose(summary[b, 4:], backward[-1], atol=1e-5)


def frames(shape, seed=0):
    return jax.random.normal(random_key(seed), shape) * 2 + 1


def test_cnn_lstm_encodes_every_frame_as_the_backbone_alone():
    model = sequence.cnn_lstm_tiny(num_outputs=2)
    backbone = ConvBackbone(widths=(4, 8))
    x = frames((2, 3, 9, 11, 1))

    def backbone_features(variables, train):
        """What the model's backbone returns on x, and its updated statistics."""
        return model.apply(
            variables,
            x,
            train=train,
            capture_intermediates=lambda module, _: module.name == "backbone",
            mutable=["intermediates", "batch_stats"],
        )[1]

    @jax.jit
    def run(variables):
        own = {c: v["backbone"] for c, v in variables.items()}
        # each frame alone, and all frames as one batch of images
        alone = jax.vmap(
            lambda frame: backbone.apply(own, frame, train=False), in_axes=1, out_axes=1
        )(x)
        images = x.reshape(6, 9, 11, 1)
        trained = backbone.apply(own, images, train=True, mutable=["batch_stats"])
        return (
            backbone_features(variables, False),
            backbone_features(variables, True),
            alone,
            trained,
        )

    evaluated, trained, alone, (trained_alone, stats_alone) = run(
        random_variables(model, x)
    )
    folded = evaluated["intermediates"]["backbone"]["__call__"][0]
    assert folded.shape == (6, 8)
    np.testing.assert_allclose(folded.reshape(2, 3, 8), alone, atol=1e-5)
    # in training, BatchNorm normalises over all folded frames of the batch
    folded = trained["intermediates"]["backbone"]["__call__"][0]
    np.testing.assert_allclose(folded, trained_alone, atol=1e-5)
    for got, expected in zip(
        jax.tree.leaves(trained["batch_stats"]["backbone"]),
        jax.tree.leaves(stats_alone),
    ):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_cnn_lstm_backbone_is_a_2d_classifiers_backbone():
    model = sequence.cnn_lstm_tiny(num_outputs=2)
    classifier = cnn_tiny(num_classes=5)
    ours = random_variables(model, jnp.ones((1, 2, 8, 8, 1)))
    theirs = random_variables(classifier, jnp.ones((1, 8, 8, 1)))
    # transfer learning's own copy by path: every backbone array fits
    loaded, report = copy_weights(ours, theirs, {"backbone": "backbone"})
    assert not report.mismatched and not report.missing and not report.unused
    assert len(report.loaded) == len(
        jax.tree.leaves(theirs["params"]["backbone"])
    ) + len(jax.tree.leaves(theirs["batch_stats"]["backbone"]))
    for got, expected in zip(
        jax.tree.leaves(loaded["params"]["backbone"]),
        jax.tree.leaves(theirs["params"]["backbone"]),
    ):
        np.testing.assert_array_equal(got, expected)
    assert model.parameter_groups() == classifier.parameter_groups()
    assert model.with_frozen_statistics(1).frozen_stages == 1
    given = SequenceClassifier(2, backbone=ConvBackbone(widths=(4, 8, 8)))
    assert given.parameter_groups().num_stages == 3
    assert given.with_frozen_statistics(2).backbone.frozen_stages == 2


TINY = [
    "cnn_lstm_tiny",
    "cnn_gru_tiny",
    "cnn_rnn_tiny",
    "cnn_bilstm_tiny",
    "temporal_conv_tiny",
    "frame_mean_tiny",
    "frame_max_tiny",
    "r2plus1d_tiny",
    "convlstm_tiny",
]
PRESETS = TINY + [name.replace("_tiny", "_small") for name in TINY]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_shapes_in_training_and_evaluation(name):
    model = getattr(sequence, name)(num_outputs=3)
    # the cine phantoms' 16 frames of 64 pixels; an odd tiny input for the tiny
    shape = (2, 3, 9, 7, 1) if name.endswith("_tiny") else (2, 16, 64, 64, 1)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    lengths = jnp.array([2, shape[1]])

    def run(x):
        variables = model.init(random_key(0), x, train=False)
        trained, updates = model.apply(
            variables,
            x,
            train=True,
            seq_lengths=lengths,
            mutable=["batch_stats"],
            rngs={"dropout": random_key(1)},
        )
        per_frame = model.clone(per_frame=True).apply(variables, x, train=False)
        return trained, per_frame, updates, variables

    # traced, not compiled: the shapes of every path at no compilation cost
    trained, per_frame, updates, variables = jax.eval_shape(run, x)
    assert trained.shape == (2, 3) and per_frame.shape == (2, shape[1], 3)
    assert jax.tree.map(lambda a: a.shape, updates["batch_stats"]) == jax.tree.map(
        lambda a: a.shape, variables["batch_stats"]
    )


@pytest.mark.parametrize(
    "name",
    [
        "cnn_bilstm_tiny",
        "temporal_conv_tiny",
        "frame_mean_tiny",
        "r2plus1d_tiny",
        "convlstm_tiny",
    ],
)
def test_tiny_preset_trains_and_ignores_padded_frames(name):
    model = getattr(sequence, name)(num_outputs=3)
    steps, lengths = 4, jnp.array([2, 4])
    x = frames((2, steps, 9, 7, 1))
    # pooled features of noise barely differ: pad with brighter, wider noise
    repadded = x.at[0, 2:].set(4 * frames((2, 9, 7, 1), seed=5) + 3)

    @jax.jit
    def run(variables):
        out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {"params": variables["params"], **updates}
        # both paddings in one batch (evaluation normalises by running statistics)
        both, both_lengths = jnp.concatenate([x, repadded]), jnp.tile(lengths, 2)
        masked = model.apply(variables, both, train=False, seq_lengths=both_lengths)
        unmasked = model.apply(variables, both, train=False)
        per_frame = model.clone(per_frame=True).apply(
            variables, both, train=False, seq_lengths=both_lengths
        )
        return out, masked, unmasked, per_frame

    out, masked, unmasked, per_frame = run(random_variables(model, x, scale=0.3))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(per_frame[:, 2:][::2], 0.0)
    # evaluation ignores what lies beyond a sequence's length
    np.testing.assert_allclose(masked[:2], masked[2:], atol=1e-5)
    np.testing.assert_allclose(per_frame[:2], per_frame[2:], atol=1e-5)
    # not vacuous: without the lengths, the padding would change the output
    assert not np.allclose(unmasked[0], unmasked[2], atol=1e-4)


def test_models_name_what_they_expected():
    with pytest.raises(ValueError, match="encoder_kind"):
        SequenceClassifier(2, encoder_kind="transformer").init(
            random_key(0), jnp.ones((1, 2, 8, 8, 1)), train=False
        )
    with pytest.raises(ValueError, match=r"\[batch, time, height, width"):
        sequence.convlstm_tiny(num_outputs=2).init(
            random_key(0), jnp.ones((1, 8, 8, 1)), train=False
        )
    with pytest.raises(ValueError, match="model.cell"):
        RecurrentEncoder("lstmm").init(
            random_key(0), jnp.ones((1, 2, 3)), train=False
        )


def test_frame_max_pools_the_valid_frames_and_padding_never_wins():
    from medjax.models.sequence.cnn_recurrent import frame_max_tiny

    model = frame_max_tiny(num_outputs=2)
    x, lengths = frames((2, 4, 9, 7, 1)), jnp.array([2, 4])
    # brighter, wider noise in the padded frames of sequence 0: its features
    # outgrow the valid frames', so it would win an unmasked max
    bright = x.at[0, 2:].set(4 * frames((2, 9, 7, 1), seed=5) + 3)
    variables = random_variables(model, x, scale=0.3)

    @jax.jit
    def run(x):
        def pooled(x):
            return model.apply(variables, x, train=False, seq_lengths=lengths)

        out, captured = model.apply(
            variables, x, train=False, seq_lengths=lengths, capture_intermediates=True
        )
        features = captured["intermediates"]["backbone"]["__call__"][0]
        unmasked = model.apply(variables, x, train=False)
        return out, features, unmasked, jax.grad(lambda x: pooled(x).sum())(x)

    out, features, _, grad = run(x)
    bright_out, bright_features, bright_unmasked, bright_grad = run(bright)
    # numpy reference: max of each feature over the valid frames, then the head
    features = np.asarray(features).reshape(2, 4, -1)
    summary = np.stack([features[b, :n].max(0) for b, n in enumerate([2, 4])])
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        out, summary @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5
    )
    # the padding changes neither the output nor gets a gradient
    np.testing.assert_allclose(bright_out, out, atol=1e-6)
    np.testing.assert_array_equal(grad[0, 2:], 0.0)
    np.testing.assert_array_equal(bright_grad[0, 2:], 0.0)
    assert np.abs(grad[0, :2]).sum() > 0
    # not vacuous: the bright padding holds larger features, and wins unmasked
    bright_features = np.asarray(bright_features).reshape(2, 4, -1)
    assert (bright_features[0, 2:].max(0) > bright_features[0, :2].max(0)).any()
    assert not np.allclose(bright_unmasked[0], out[0], atol=1e-4)
