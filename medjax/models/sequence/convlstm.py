"""ConvLSTM models for spatio-temporal maps (Shi et al. 2015), on flax's
``ConvLSTMCell``.

:class:`ConvLSTMEncoder` runs stacked (optionally bidirectional) ConvLSTM
layers over a sequence of feature maps ``[B, T, H, W, C]`` and returns every
step's hidden map; its gates are convolutions, so the state keeps the spatial
layout (where the wall moves, not only how much). Variable lengths go through
``nn.RNN``'s ``seq_lengths`` as in :mod:`~medjax.models.sequence.recurrent`.

:class:`ConvLSTMClassifier` downsamples every frame with a small strided conv
stem (shared weights, frames folded into the batch), runs the encoder, pools the
last valid hidden map over space and classifies it (or every frame's map, with
``per_frame``).

Parameter names: the encoder's layer ``i`` is ``layer{i}`` (``cell``, or
``forward_rnn/cell`` and ``backward_rnn/cell``); the classifier's stem convs are
``stem{i}`` (with ``stem{i}_norm``), the encoder ``temporal``, the head ``head``.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.layers import activation, normalization
from medjax.models.sequence.cnn_recurrent import check_frames
from medjax.models.sequence.masking import (
    final_step,
    valid_steps,
    zero_padded_steps,
)


def conv_lstm_layer(
    features: int, kernel_size: int, bidirectional: bool, name: str
) -> nn.Module:
    """One ``nn.RNN`` of ``ConvLSTMCell`` (or an ``nn.Bidirectional`` pair)."""

    def rnn(**kwargs) -> nn.RNN:
        cell = nn.ConvLSTMCell(features, (kernel_size, kernel_size), parent=None)
        return nn.RNN(cell, **kwargs)

    if not bidirectional:
        return rnn(name=name)
    return nn.Bidirectional(rnn(parent=None), rnn(parent=None), name=name)


class ConvLSTMEncoder(nn.Module):
    """Stacked ConvLSTM layers over ``[B, T, H, W, C]``, every step returned.

    Attributes:
        features: hidden channels of every layer and direction.
        kernel_size: spatial kernel of the input and recurrent convolutions.
        num_layers: stacked layers.
        bidirectional: every layer also reads each sequence backwards (its valid
            steps only); the output has ``2 * features`` channels, forward first.
    """

    features: int = 16
    kernel_size: int = 3
    num_layers: int = 1
    bidirectional: bool = False

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        seq_lengths: jnp.ndarray | None = None,
        train: bool,
    ) -> jnp.ndarray:
        """``x [B, T, H, W, C]`` -> hidden maps ``[B, T, H, W, H']``, zero at
        padded steps (``H' = features``, doubled when bidirectional)."""
        del train  # no dropout or normalisation inside the recurrence
        check_frames(type(self).__name__, x)
        lengths, mask = valid_steps(seq_lengths, x)
        y = x
        for layer in range(self.num_layers):
            rnn = conv_lstm_layer(
                self.features, self.kernel_size, self.bidirectional, f"layer{layer}"
            )
            y = zero_padded_steps(rnn(y, seq_lengths=lengths), mask)
        return y


class ConvLSTMClassifier(nn.Module):
    """Conv stem per frame, ConvLSTM over time, spatial pooling, a head.

    Attributes:
        num_outputs: outputs of the head.
        stem_widths: channels of the stride-2 3x3 conv-norm-act layers applied to
            every frame before the recurrence (each halves the resolution, which
            the ConvLSTM's cost scales with).
        features: ConvLSTM hidden channels (per direction).
        kernel_size: ConvLSTM kernel.
        num_layers: stacked ConvLSTM layers.
        bidirectional: ConvLSTM layers read each sequence both ways.
        per_frame: one output per frame ``[B, T, num_outputs]``.
        norm, norm_momentum, activation: of the stem, as in
            :class:`~medjax.models.cnn.CNNClassifier`.
        dropout_rate: dropout before the head.
    """

    num_outputs: int
    stem_widths: Sequence[int] = (16, 32)
    features: int = 32
    kernel_size: int = 3
    num_layers: int = 1
    bidirectional: bool = False
    per_frame: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99
    activation: str = "relu"
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        train: bool,
        seq_lengths: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Maps frames ``x [B, T, H, W, C]`` to ``[B, num_outputs]`` (from the
        last valid hidden map), or ``[B, T, num_outputs]`` (zero at padded
        frames) with ``per_frame``."""
        check_frames(type(self).__name__, x)
        batch, steps = x.shape[:2]
        lengths, mask = valid_steps(seq_lengths, x)
        act = activation(self.activation)
        y = x.reshape((batch * steps,) + x.shape[2:])
        for index, width in enumerate(self.stem_widths):
            y = nn.Conv(width, (3, 3), (2, 2), use_bias=False, name=f"stem{index}")(y)
            y = normalization(
                self.norm,
                train=train,
                momentum=self.norm_momentum,
                name=f"stem{index}_norm",
            )(y)
            y = act(y)
        y = y.reshape((batch, steps) + y.shape[1:])
        maps = ConvLSTMEncoder(
            self.features,
            self.kernel_size,
            self.num_layers,
            self.bidirectional,
            name="temporal",
        )(y, seq_lengths=lengths, train=train)
        if self.per_frame:
            summary = jnp.mean(maps, axis=(2, 3))  # [B, T, H']
        else:
            summary = jnp.mean(
                final_step(maps, lengths, self.bidirectional), axis=(1, 2)
            )
        summary = nn.Dropout(self.dropout_rate, deterministic=not train)(summary)
        outputs = nn.Dense(self.num_outputs, name="head")(summary)
        return zero_padded_steps(outputs, mask) if self.per_frame else outputs


convlstm_tiny = partial(ConvLSTMClassifier, stem_widths=(4,), features=4)
convlstm_small = partial(
    ConvLSTMClassifier, stem_widths=(16, 32), features=32, dropout_rate=0.1
)
