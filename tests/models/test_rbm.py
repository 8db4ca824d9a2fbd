"""RBM: energies and conditionals by hand, CD gradients against exact ones, the
persistent chain, pseudo-likelihood against brute force and scikit-learn."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.models.rbm import RBM, draw_samples, rbm_tiny
from medjax.engine.pretraining import fit_rbm
from medjax.runtime import random_key
from medjax.tasks.generative import RBMTask

# A 2 x 3 RBM (2 visible, 3 hidden units) small enough to do by hand.
KERNEL = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0]], np.float32)
VISIBLE_BIAS = np.array([0.5, -1.0], np.float32)
HIDDEN_BIAS = np.array([0.0, 1.0, -0.5], np.float32)
HAND = {"params": {"kernel": KERNEL, "visible_bias": VISIBLE_BIAS, "hidden_bias": HIDDEN_BIAS}}


def _softplus(x):
    return np.log1p(np.exp(x))


def _binary_states(n):
    return np.array(list(itertools.product([0, 1], repeat=n)), np.float32)


def test_free_energy_and_conditionals_by_hand():
    model = RBM(num_hidden=3)
    v = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    # v = (1, 0): hidden logits c + v.W = (0, 1, -0.5) + (1, -1, 0.5) = (1, 0, 0);
    # F = -b.v - sum softplus = -0.5 - (log(1 + e) + 2 log 2).
    # v = (0, 1): logits (0, 3, -1.5); F = 1 - (log 2 + log(1 + e^3) + log(1 + e^-1.5)).
    expected = [
        -0.5 - (np.log1p(np.e) + 2 * np.log(2.0)),
        1.0 - (np.log(2.0) + _softplus(3.0) + _softplus(-1.5)),
    ]
    np.testing.assert_allclose(expected, [-3.1995561, -2.9431472], rtol=1e-6)
    energy = model.apply(HAND, v, method=RBM.free_energy)
    np.testing.assert_allclose(energy, expected, rtol=1e-6)

    # F(v) = -log sum_h exp(-E(v, h)), E = -b.v - c.h - v.W.h, over all 8 h.
    hidden = _binary_states(3)
    for row, f in zip(v, np.asarray(energy)):
        joint = -(row @ VISIBLE_BIAS + hidden @ HIDDEN_BIAS + hidden @ (row @ KERNEL))
        np.testing.assert_allclose(f, -np.log(np.sum(np.exp(-joint))), rtol=1e-6)

    probabilities = model.apply(HAND, v, method=RBM.hidden_probabilities)
    sigmoid = lambda x: 1 / (1 + np.exp(-np.asarray(x)))
    np.testing.assert_allclose(probabilities[0], [sigmoid(1.0), 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(probabilities[1], sigmoid([0.0, 3.0, -1.5]), rtol=1e-6)

    # h = (1, 0, 1): b + W.h = (0.5 + 1 + 0.5, -1 + 0 - 1) = (2, -2).
    h = np.array([[1.0, 0.0, 1.0]], np.float32)
    mean = model.apply(HAND, h, method=RBM.visible_mean)
    np.testing.assert_allclose(mean, sigmoid([[2.0, -2.0]]), rtol=1e-6)

    gaussian = RBM(num_hidden=3, visible="gaussian")
    # F = |v - b|^2 / 2 - sum softplus: (0.5^2 + 1^2) / 2 = 0.625 for v = (1, 0).
    energy = gaussian.apply(HAND, v[:1], method=RBM.free_energy)
    np.testing.assert_allclose(energy, [0.625 - (np.log1p(np.e) + 2 * np.log(2.0))], rtol=1e-6)
    np.testing.assert_allclose(gaussian.apply(HAND, h, method=RBM.visible_mean), [[2.0, -2.0]])


def test_images_are_flattened_and_outputs_are_deterministic_without_train():
    model = rbm_tiny()
    images = jax.random.bernoulli(random_key(0), 0.5, (3, 5, 3, 1)).astype(jnp.float32)
    variables = model.init(random_key(1), images, train=False)
    assert variables["params"]["kernel"].shape == (15, 8)
    apply = jax.jit(lambda v: model.apply(v, images, train=False))
    first, second = apply(variables), apply(variables)
    assert set(first) == {"free_energy", "free_energy_model", "reconstruction", "pseudo_log_likelihood"}
    assert first["reconstruction"].shape == (3, 15)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


def test_cd1_gradient_points_along_the_exact_likelihood_gradient():
    """On a toy distribution over 4 bits, the CD-1 surrogate's gradient (averaged
    over 4000 chains) agrees with the exact gradient of the negative log-likelihood
    (enumerating all 16 visible states), and moves the visible biases towards the
    data's bit frequencies."""
    model = RBM(num_hidden=3, init_scale=0.5)
    patterns = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], np.float32)
    v = np.repeat(patterns, [3000, 1000], axis=0)  # bit means 1, 0.75, 0.25, 0
    params = model.init(random_key(0), v[:1], train=False)["params"]
    task = RBMTask(threshold=None)
    batch = {"image": v, "valid": np.ones(len(v), bool)}

    def cd_loss(p):
        outputs = model.apply({"params": p}, v, train=True, rngs={"sample": random_key(1)})
        return task.loss(outputs, batch)[0]

    states = _binary_states(4)

    def negative_log_likelihood(p):
        free_energy = lambda x: model.apply({"params": p}, x, method=RBM.free_energy)
        return jnp.mean(free_energy(v)) + jax.scipy.special.logsumexp(-free_energy(states))

    cd = jax.jit(jax.grad(cd_loss))(params)
    exact = jax.jit(jax.grad(negative_log_likelihood))(params)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    cosine = flat(cd) @ flat(exact) / np.linalg.norm(flat(cd)) / np.linalg.norm(flat(exact))
    assert cosine > 0.98
    # Descent raises the bias of bits the data sets more often than the model.
    assert np.all(np.sign(cd["visible_bias"]) == np.sign(exact["visible_bias"]))
    assert cd["visible_bias"][0] < 0 < cd["visible_bias"][3]


def _identity_chain_variables(num_visible):
    """Saturated weights: h = v and then v = h almost surely, so a Gibbs step
    leaves any binary state where it is."""
    return {
        "kernel": 40.0 * np.eye(num_visible, dtype=np.float32),
        "visible_bias": np.full(num_visible, -20.0, np.float32),
        "hidden_bias": np.full(num_visible, -20.0, np.float32),
    }


def test_persistent_chain_is_carried_across_train_steps():
    """Through the engine's train_step: the chain starts from the first batch
    (rows repeated to num_chains), is kept in batch_stats, and the second step's
    negative phase starts from it, not from the second batch."""
    from medjax.engine.state import create_train_state
    from medjax.engine.step import train_step

    model = RBM(num_hidden=4, persistent=True, num_chains=5, cd_steps=2)
    task = RBMTask(threshold=0.5)
    first = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]], np.float32)
    second = 1.0 - first
    state = create_train_state(model, optax.sgd(0.0), first, random_key(0))
    assert state.batch_stats["chain"].shape == (5, 4)
    assert int(state.batch_stats["chain_steps"]) == 0
    state = state.replace(params=jax.tree.map(jnp.asarray, _identity_chain_variables(4)))
    valid = np.ones(3, bool)
    step = jax.jit(lambda s, b, k: train_step(s, b, k, task=task))
    state, _ = step(state, {"image": first, "valid": valid}, random_key(1))
    np.testing.assert_array_equal(state.batch_stats["chain"], first[[0, 1, 2, 0, 1]])
    state, metrics = step(state, {"image": second, "valid": valid}, random_key(1))
    np.testing.assert_array_equal(state.batch_stats["chain"], first[[0, 1, 2, 0, 1]])
    assert int(state.batch_stats["chain_steps"]) == 4  # 2 steps of CD-2

    # Without persistence the negative phase starts from (and here stays at) the batch.
    plain = RBM(num_hidden=4)
    outputs = plain.apply(
        {"params": _identity_chain_variables(4)}, second, train=True,
        rngs={"sample": random_key(2)},
    )
    np.testing.assert_allclose(outputs["free_energy_model"], outputs["free_energy"])


def test_pseudo_log_likelihood_matches_brute_force_and_scikit_learn():
    from sklearn.neural_network import BernoulliRBM

    num_visible, num_hidden = 7, 5
    model = RBM(num_hidden=num_hidden)
    keys = jax.random.split(random_key(3), 4)
    params = {
        "kernel": jax.random.normal(keys[0], (num_visible, num_hidden)),
        "visible_bias": jax.random.normal(keys[1], (num_visible,)),
        "hidden_bias": jax.random.normal(keys[2], (num_hidden,)),
    }
    v = np.asarray(jax.random.bernoulli(keys[3], 0.4, (3, num_visible)), np.float32)
    pll = model.apply({"params": params}, v, chunk_size=3, method=RBM.pseudo_log_likelihood)

    # Brute force: p(v) from the joint over every hidden state, then
    # log p(v_i | v_-i) = log p(v) / (p(v) + p(v with bit i flipped)).
    W, b, c = (np.asarray(params[k], np.float64) for k in ("kernel", "visible_bias", "hidden_bias"))
    hidden = _binary_states(num_hidden).astype(np.float64)

    def log_unnormalised(x):
        return np.log(np.sum(np.exp(x @ b + hidden @ c + hidden @ (x @ W))))

    expected = []
    for row in v.astype(np.float64):
        total = 0.0
        for i in range(num_visible):
            flipped = row.copy()
            flipped[i] = 1 - flipped[i]
            a, f = log_unnormalised(row), log_unnormalised(flipped)
            total += a - np.logaddexp(a, f)
        expected.append(total)
    np.testing.assert_allclose(pll, expected, rtol=1e-5)

    # scikit-learn's score_samples flips one random bit and multiplies by D:
    # its mean over many draws is the exact value.
    reference = BernoulliRBM(n_components=num_hidden, random_state=0)
    reference.components_ = W.T.copy()
    reference.intercept_visible_, reference.intercept_hidden_ = b, c
    reference.n_features_in_ = num_visible
    draws = np.repeat(v[:1].astype(np.float64), 20000, axis=0)
    scores = reference.score_samples(draws)
    assert abs(scores.mean() - expected[0]) < 4 * scores.std() / np.sqrt(len(scores))


def test_reconstruction_error_falls_with_training():
    """CD-1 on a toy data set of two 12-bit patterns and their noisy copies."""
    rng = np.random.default_rng(0)
    patterns = np.array([[1] * 6 + [0] * 6, [0, 1] * 6], np.float32)
    data = patterns[rng.integers(0, 2, 256)]
    data = np.abs(data - (rng.random(data.shape) < 0.05)).astype(np.float32)
    model = rbm_tiny()
    task = RBMTask(threshold=None)
    variables, history = fit_rbm(
        model, data, tx=optax.adam(0.05), epochs=10, batch_size=16, key=random_key(0), task=task
    )
    untrained = model.init(random_key(0), data[:1], train=False)
    batch = {"image": data, "valid": np.ones(len(data), bool)}

    @jax.jit
    def evaluate(v):
        return task.loss(model.apply(v, data, train=False), batch)[1]

    before, after = evaluate(untrained), evaluate(variables)
    assert float(after["reconstruction_error"].mean()) < 0.5 * float(before["reconstruction_error"].mean())
    assert float(after["pseudo_log_likelihood"].mean()) > float(before["pseudo_log_likelihood"].mean()) + 2
    assert history[-1]["reconstruction_error"] < history[0]["reconstruction_error"]

    samples = draw_samples(model, variables, random_key(1), num=6, steps=50, image_shape=(3, 4))
    assert samples.shape == (6, 3, 4) and np.all((samples >= 0) & (samples <= 1))
    # Samples look like the data: each is close to one of the two patterns.
    distance = np.abs(samples.reshape(6, 1, 12) - patterns[None]).mean(-1).min(-1)
    assert np.all(distance < 0.25)


@pytest.mark.parametrize("options", [dict(visible="poisson"), dict(num_hidden=0), dict(cd_steps=0)])
def test_bad_options_raise_one_clear_line(options):
    with pytest.raises(ValueError, match="^model\\."):
        RBM(**{"num_hidden": 4, **options})
