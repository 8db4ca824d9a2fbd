"""Multi-layer perceptron on flattened inputs."""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.layers import activation


class MLP(nn.Module):
    """Dense-ReLU layers with dropout, then a linear head.

    Attributes:
        num_outputs: width of the output layer (classes, or 1 for regression).
        hidden_sizes: width of each hidden layer; empty gives linear regression.
        dropout_rate: dropout after each hidden activation.
        activation: the hidden layers' nonlinearity
            (:func:`medjax.models.layers.activation`).
    """

    num_outputs: int
    hidden_sizes: Sequence[int] = (128, 64)
    dropout_rate: float = 0.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Maps ``x [B, ...]`` to ``[B, num_outputs]``; trailing axes are flattened."""
        x = x.reshape((x.shape[0], -1))
        act = activation(self.activation)
        for width in self.hidden_sizes:
            x = act(nn.Dense(width)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_outputs)(x)


mlp_tiny = partial(MLP, hidden_sizes=(8,))
mlp_small = partial(MLP, hidden_sizes=(256, 128), dropout_rate=0.1)
