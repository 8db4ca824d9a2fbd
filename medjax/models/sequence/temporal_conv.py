"""A temporal-convolution encoder: 1D convolutions over the time axis.

The baseline to recurrence that sees a fixed window of neighbouring steps
(``num_layers * (kernel_size - 1) + 1`` of them) instead of the whole past.
Steps past each sequence's end are zeroed before every convolution, so a valid
step sees exactly the zero padding ('SAME') it would see in the unpadded
sequence.
"""

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.layers import activation
from medjax.models.sequence.masking import (
    masked_mean_over_time,
    valid_steps,
    zero_padded_steps,
)


class TemporalConvEncoder(nn.Module):
    """Stacked ``Conv1D(features, kernel_size, 'SAME')`` + activation over time.

    Attributes:
        features: channels of every layer.
        kernel_size: steps each convolution spans (odd keeps the window centred).
        num_layers: stacked convolutions (``conv{i}``).
        return_sequences: output every step ``[B, T, features]`` instead of the
            mean over the valid steps ``[B, features]``.
        activation: the nonlinearity (:func:`medjax.models.layers.activation`).
    """

    features: int = 32
    kernel_size: int = 3
    num_layers: int = 2
    return_sequences: bool = False
    activation: str = "relu"

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        seq_lengths: jnp.ndarray | None = None,
        train: bool,
    ) -> jnp.ndarray:
        """Encodes ``x [B, T, F]`` to ``[B, features]`` (or ``[B, T, features]``,
        zero at padded steps, with ``return_sequences``)."""
        del train  # no dropout or normalisation here
        _, mask = valid_steps(seq_lengths, x)
        act = activation(self.activation)
        y = x
        for layer in range(self.num_layers):
            y = zero_padded_steps(y, mask)
            y = act(nn.Conv(self.features, (self.kernel_size,), name=f"conv{layer}")(y))
        y = zero_padded_steps(y, mask)
        return y if self.return_sequences else masked_mean_over_time(y, mask)
