"""Recurrent sequence encoders built on flax's own cells and ``nn.RNN``.

``RecurrentEncoder`` stacks ``num_layers`` recurrent layers (a simple tanh RNN,
a GRU or an LSTM), each optionally bidirectional, over features ``[B, T, F]``.
Variable lengths go through ``nn.RNN``'s ``seq_lengths``: the carry stops at the
last valid step, and the backward direction of ``nn.Bidirectional`` reverses
only the valid steps of each sequence, so padding never reaches an output at a
valid step. The encoder also zeroes its outputs at padded steps, so a stacked
layer or a per-step head sees nothing but zeros there.

Parameter names are part of the interface: layer ``i`` is ``layer{i}``; a
unidirectional layer keeps flax's cell under ``layer{i}/cell``, a bidirectional
one under ``layer{i}/forward_rnn/cell`` and ``layer{i}/backward_rnn/cell``.
The LSTM is flax's ``OptimizedLSTMCell`` (same parameters as ``LSTMCell``: input
kernels ``ii if ig io`` without bias, recurrent ``hi hf hg ho`` with bias; no
peepholes; forget-gate bias initialised at 0).
"""

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.sequence.masking import (
    final_step,
    valid_steps,
    zero_padded_steps,
)

CELLS = ("rnn", "gru", "lstm")


def check_cell(cell: str, option: str = "model.cell") -> None:
    """One-line error for an unknown cell name."""
    if cell not in CELLS:
        raise ValueError(f"{option}: expected one of {CELLS}, got {cell!r}")


def recurrent_cell(cell: str, features: int) -> nn.Module:
    """Flax's recurrent cell of this kind: ``rnn`` (``SimpleCell``, tanh), ``gru``
    (``GRUCell``) or ``lstm`` (``OptimizedLSTMCell``).

    The cell is unbound (``parent=None``), so the ``nn.RNN`` it is given to
    adopts it as its ``cell`` even when built inside a compact method.
    """
    check_cell(cell)
    if cell == "rnn":
        return nn.SimpleCell(features, parent=None)
    if cell == "gru":
        return nn.GRUCell(features, parent=None)
    return nn.OptimizedLSTMCell(features, parent=None)


def recurrent_layer(
    cell: str, features: int, bidirectional: bool, name: str
) -> nn.Module:
    """One ``nn.RNN`` layer (or an ``nn.Bidirectional`` pair) over ``[B, T, F]``."""
    if not bidirectional:
        return nn.RNN(recurrent_cell(cell, features), name=name)
    return nn.Bidirectional(
        nn.RNN(recurrent_cell(cell, features), parent=None),
        nn.RNN(recurrent_cell(cell, features), parent=None),
        name=name,
    )


class RecurrentEncoder(nn.Module):
    """Stacked (bi)directional RNN / GRU / LSTM over a batch of sequences.

    Attributes:
        cell: 'rnn' (tanh ``SimpleCell``), 'gru' or 'lstm'.
        features: hidden size of every layer and direction.
        num_layers: stacked recurrent layers; each reads the previous one's
            outputs at every step.
        bidirectional: every layer also reads each sequence backwards (its valid
            steps only); the two directions' outputs are concatenated, so the
            output width is ``2 * features``.
        return_sequences: output every step ``[B, T, H]`` instead of the
            sequence summary ``[B, H]``.
        dropout_rate: dropout between stacked layers (training only).
    """

    cell: str = "lstm"
    features: int = 32
    num_layers: int = 1
    bidirectional: bool = False
    return_sequences: bool = False
    dropout_rate: float = 0.0

    @property
    def output_features(self) -> int:
        return self.features * (2 if self.bidirectional else 1)

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        seq_lengths: jnp.ndarray | None = None,
        train: bool,
    ) -> jnp.ndarray:
        """Encodes ``x [B, T, F]``.

        Args:
            x: the sequences, time on axis 1.
            seq_lengths: ``[B]`` valid steps of each sequence (1..T); None: all T.
            train: dropout between layers is active only when True.

        Returns:
            ``[B, H]`` (``H = features``, or ``2 * features`` bidirectional): the
            output at each sequence's last valid step (bidirectional: the forward
            direction's there and the backward direction's at step 0,
            concatenated); or with ``return_sequences`` ``[B, T, H]``, zero at
            padded steps.
        """
        check_cell(self.cell)
        if x.ndim != 3:
            raise ValueError(
                f"RecurrentEncoder expects sequences [batch, time, features], "
                f"got shape {x.shape}"
            )
        if self.num_layers < 1:
            raise ValueError(f"model.num_layers: expected >= 1, got {self.num_layers}")
        lengths, mask = valid_steps(seq_lengths, x)
        y = x
        for layer in range(self.num_layers):
            if layer > 0:
                y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
            rnn = recurrent_layer(
                self.cell, self.features, self.bidirectional, f"layer{layer}"
            )
            # nn.RNN still computes outputs past a sequence's end (its carry is
            # frozen there); zero them so the next layer and heads see padding.
            y = zero_padded_steps(rnn(y, seq_lengths=lengths), mask)
        if self.return_sequences:
            return y
        return final_step(y, lengths, self.bidirectional)


# Encoders of per-step feature vectors (the CNN-LSTM builds its own).
rnn_encoder_tiny = partial(RecurrentEncoder, cell="rnn", features=8)
gru_encoder_tiny = partial(RecurrentEncoder, cell="gru", features=8)
lstm_encoder_tiny = partial(RecurrentEncoder, cell="lstm", features=8)
bilstm_encoder_tiny = partial(
    RecurrentEncoder, cell="lstm", features=8, num_layers=2, bidirectional=True
)
lstm_encoder_small = partial(RecurrentEncoder, cell="lstm", features=64)
