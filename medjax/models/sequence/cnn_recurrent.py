"""CNN-RNN sequence models over the frames of a cine or the slices of a stack.

:class:`SequenceClassifier` applies one 2D backbone to every frame (shared
weights: the frames are folded into the batch, ``[B, T, H, W, C] -> [B*T, H, W,
C]``), then a temporal encoder over the frame features ``[B, T, F]``, then a
dense head: per sequence (``[B, num_outputs]``) or per frame (``[B, T,
num_outputs]``). The temporal encoder (``encoder_kind``) is what the study
compares, everything else being equal:

- ``lstm`` / ``gru`` / ``rnn``: :class:`RecurrentEncoder` (the CNN-LSTM of
  Donahue et al. 2015; stacked, optionally bidirectional);
- ``temporal_conv``: :class:`TemporalConvEncoder` (1D convolutions over time);
- ``mean``: the frame-mean baseline (frame features averaged over the valid
  frames; per frame, each frame on its own): what a 2D CNN sees without time.
- ``max``: the frame-max (multiple-instance) baseline: the per-frame features
  max-pooled over the valid frames, then the head. For a slice stack this is a
  2D CNN with max over slices: a volume holds a lesion when some slice does.
  Features rather than per-slice logits are pooled (embedding-level MIL, which
  Wang et al. 2018 found trains at least as well as pooling instance scores):
  each ReLU feature is a detector that fires on the slice that shows it best,
  one head serves any number of classes or a regression (a max over each class
  logit separately would mix slices), and ``per_frame`` still gives the
  per-slice scores.

Parameter names are part of the interface (checkpoints are loaded by path): the
per-frame backbone is ``backbone`` with the same subtree as
:class:`~medjax.models.cnn.CNNClassifier`'s, so transfer learning loads a 2D
classifier's backbone into it (``{"backbone": "backbone"}``) and
``parameter_groups()`` declares its stages; the temporal encoder is
``temporal`` and the classifier ``head``.

BatchNorm in the backbone normalises over every folded frame of the batch in
training, padded frames included; with variable lengths prefer ``norm=group``
or ``instance`` (evaluation uses running statistics and is exact either way).
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.cnn import OptionalBackboneTransfer, backbone_like
from medjax.models.sequence.masking import (
    masked_max_over_time,
    masked_mean_over_time,
    valid_steps,
    zero_padded_steps,
)
from medjax.models.sequence.recurrent import CELLS, RecurrentEncoder
from medjax.models.sequence.temporal_conv import TemporalConvEncoder

ENCODER_KINDS = (*CELLS, "temporal_conv", "mean", "max")
# Kinds with no temporal parameters: a masked pooling of the frame features.
POOLING = {"mean": masked_mean_over_time, "max": masked_max_over_time}


def check_frames(model: str, x: jnp.ndarray) -> None:
    """One-line error unless ``x`` is a batch of 2D frame sequences."""
    if x.ndim != 5:
        raise ValueError(
            f"{model} expects frame sequences [batch, time, height, width, "
            f"channels], got shape {x.shape}"
        )


class SequenceClassifier(nn.Module, OptionalBackboneTransfer):
    """A 2D backbone per frame, a temporal encoder, a dense head.

    Attributes:
        num_outputs: outputs of the head (logits, or regression targets).
        encoder_kind: 'lstm', 'gru', 'rnn', 'temporal_conv', 'mean' or 'max'
            (see the module docstring).
        backbone: a medjax 2D feature extractor ``[N, H, W, C] -> [N, F]`` called
            as ``backbone(x, train=...)`` (e.g. a
            :class:`~medjax.models.cnn.ConvBackbone`); None builds a
            ``ConvBackbone`` from the fields below.
        per_frame: one output per frame ``[B, T, num_outputs]``.
        features: width of the temporal encoder (per direction).
        num_layers: stacked recurrent or convolutional layers over time.
        bidirectional: recurrent kinds read each sequence both ways.
        temporal_kernel: frames each temporal convolution spans.
        widths, blocks_per_stage, residual, norm, norm_momentum, stem,
            frozen_stages, activation, conv_impl, global_pool: of the default
            backbone, as in :class:`~medjax.models.cnn.CNNClassifier`
            (ignored when ``backbone`` is given).
        dropout_rate: dropout before the head (and between recurrent layers).

    Parameter groups: the backbone ``backbone`` (one stage per width for a
    ``ConvBackbone``, else one stage); ``temporal`` and ``head`` are the head.
    """

    num_outputs: int
    encoder_kind: str = "lstm"
    backbone: Any = None
    per_frame: bool = False
    features: int = 32
    num_layers: int = 1
    bidirectional: bool = False
    temporal_kernel: int = 3
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"
    dropout_rate: float = 0.0

    def _frame_backbone(self) -> nn.Module:
        if self.backbone is not None:
            return self.backbone
        return backbone_like(self, spatial_dims=2)

    def _temporal(self) -> nn.Module:
        if self.encoder_kind in CELLS:
            return RecurrentEncoder(
                cell=self.encoder_kind,
                features=self.features,
                num_layers=self.num_layers,
                bidirectional=self.bidirectional,
                return_sequences=self.per_frame,
                dropout_rate=self.dropout_rate,
                name="temporal",
            )
        return TemporalConvEncoder(
            features=self.features,
            kernel_size=self.temporal_kernel,
            num_layers=self.num_layers,
            return_sequences=self.per_frame,
            activation=self.activation,
            name="temporal",
        )

    def _encode_frames(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """The backbone on every frame: ``x [B, T, H, W, C] -> [B, T, F]``
        (called from ``__call__``'s compact scope)."""
        check_frames(type(self).__name__, x)
        batch, steps = x.shape[:2]
        folded = x.reshape((batch * steps,) + x.shape[2:])
        features = self._frame_backbone()(folded, train=train)
        return features.reshape((batch, steps) + features.shape[1:])

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        *,
        train: bool,
        seq_lengths: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Maps frames ``x [B, T, H, W, C]`` (valid up to ``seq_lengths [B]``,
        None: all ``T``) to ``[B, num_outputs]``, or ``[B, T, num_outputs]``
        (zero at padded frames) with ``per_frame``."""
        if self.encoder_kind not in ENCODER_KINDS:
            raise ValueError(
                f"model.encoder_kind: expected one of {ENCODER_KINDS}, "
                f"got {self.encoder_kind!r}"
            )
        features = self._encode_frames(x, train=train)
        lengths, mask = valid_steps(seq_lengths, x)
        if self.encoder_kind in POOLING:
            pool = POOLING[self.encoder_kind]
            summary = features if self.per_frame else pool(features, mask)
        else:
            summary = self._temporal()(features, seq_lengths=lengths, train=train)
        summary = nn.Dropout(self.dropout_rate, deterministic=not train)(summary)
        outputs = nn.Dense(self.num_outputs, name="head")(summary)
        return zero_padded_steps(outputs, mask) if self.per_frame else outputs


cnn_lstm_tiny = partial(
    SequenceClassifier, encoder_kind="lstm", widths=(4, 8), features=8
)
cnn_gru_tiny = partial(
    SequenceClassifier, encoder_kind="gru", widths=(4, 8), features=8
)
cnn_rnn_tiny = partial(
    SequenceClassifier, encoder_kind="rnn", widths=(4, 8), features=8
)
cnn_bilstm_tiny = partial(
    SequenceClassifier,
    encoder_kind="lstm",
    bidirectional=True,
    widths=(4, 8),
    features=8,
)
temporal_conv_tiny = partial(
    SequenceClassifier, encoder_kind="temporal_conv", widths=(4, 8), features=8
)
frame_mean_tiny = partial(SequenceClassifier, encoder_kind="mean", widths=(4, 8))
frame_max_tiny = partial(SequenceClassifier, encoder_kind="max", widths=(4, 8))

# Small: the 16-32-64 plain CNN per 64-pixel frame, 64 hidden units over time.
_small = {"widths": (16, 32, 64), "features": 64, "dropout_rate": 0.1}
cnn_lstm_small = partial(SequenceClassifier, encoder_kind="lstm", **_small)
cnn_gru_small = partial(SequenceClassifier, encoder_kind="gru", **_small)
cnn_rnn_small = partial(SequenceClassifier, encoder_kind="rnn", **_small)
cnn_bilstm_small = partial(
    SequenceClassifier, encoder_kind="lstm", bidirectional=True, **_small
)
temporal_conv_small = partial(
    SequenceClassifier, encoder_kind="temporal_conv", num_layers=2, **_small
)
frame_mean_small = partial(SequenceClassifier, encoder_kind="mean", **_small)
frame_max_small = partial(SequenceClassifier, encoder_kind="max", **_small)
