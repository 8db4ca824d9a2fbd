"""The random draws every part of augmentation shares: a coin, then a value."""

import jax


def coin(key: jax.Array, probability: float) -> tuple[jax.Array, jax.Array]:
    """(whether the part applies, a key for its parameters)."""
    coin_key, value_key = jax.random.split(key)
    return jax.random.bernoulli(coin_key, probability), value_key


def uniform(key: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    """A scalar uniform in ``[bounds[0], bounds[1]]``."""
    return jax.random.uniform(key, (), minval=bounds[0], maxval=bounds[1])
