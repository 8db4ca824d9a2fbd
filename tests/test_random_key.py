"""medjax.runtime.random_key: JAX's threefry numbers, bit for bit, for every
draw medjax makes (arrays of rank 0-5, inside and outside jit, after split and
fold_in), with threefry's partitionable and classic layouts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.runtime import random_key

# rank 5 (a 3D convolution's kernel) is drawn by the network test below
SHAPES = [(), (7,), (5, 6), (2, 3, 4, 5)]
DRAWS = {
    "bits": lambda k, s: jax.random.bits(k, s),
    "uniform": lambda k, s: jax.random.uniform(k, s),
    "normal": lambda k, s: jax.random.normal(k, s),
    "truncated_normal": lambda k, s: jax.random.truncated_normal(k, -2.0, 2.0, s),
    "bernoulli": lambda k, s: jax.random.bernoulli(k, 0.3, s),
    "randint": lambda k, s: jax.random.randint(k, s, 0, 1000),
    "categorical": lambda k, s: jax.random.categorical(k, jnp.zeros((*s, 3))),
}


def _threefry(seed):
    return jax.random.key(seed, impl="threefry2x32")


@pytest.fixture
def classic_layout():
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    yield
    jax.config.update("jax_threefry_partitionable", before)


@pytest.mark.parametrize("draw", sorted(DRAWS))
def test_every_draw_equals_threefrys_bit_for_bit(draw):
    _assert_same_draws(DRAWS[draw])


@pytest.mark.parametrize("draw", ["bits", "normal"])
def test_threefrys_classic_layout_too(draw, classic_layout):
    assert not jax.config.jax_threefry_partitionable
    _assert_same_draws(DRAWS[draw])


def _assert_same_draws(function):
    for shape in SHAPES:
        want = function(jax.random.fold_in(_threefry(3), 11), shape)
        got = function(jax.random.fold_in(random_key(3), 11), shape)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(shape))
    # and under jit, after a split, where the training step draws
    jitted = jax.jit(lambda k: function(jax.random.split(k, 3)[2], (2, 3, 4, 5)))
    np.testing.assert_array_equal(np.asarray(jitted(random_key(5))),
                                  np.asarray(jitted(_threefry(5))))


def test_permutation_and_choice_equal_threefrys():
    for function in (lambda k: jax.random.permutation(k, 50),
                     lambda k: jax.random.choice(k, 40, (10,), replace=False)):
        np.testing.assert_array_equal(np.asarray(function(random_key(1))),
                                      np.asarray(function(_threefry(1))))


def test_a_3d_convolution_initialises_to_the_same_parameters():
    model = nn.Conv(4, (3, 3, 3))  # a rank-5 kernel, as every 3D network's
    x = jnp.zeros((1, 6, 6, 6, 2))

    def init(key):
        return model.init(key, x)

    got = jax.jit(init)(random_key(0))
    want = jax.jit(init)(_threefry(0))
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # the parameters are random draws, not zeros everywhere
    assert float(jnp.std(got["params"]["kernel"])) > 0.05


def test_different_seeds_give_different_numbers():
    a = jax.random.normal(random_key(0), (100,))
    b = jax.random.normal(random_key(1), (100,))
    assert not np.allclose(np.asarray(a), np.asarray(b))
