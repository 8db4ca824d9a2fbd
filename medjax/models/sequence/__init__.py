"""Sequence models over time: recurrent encoders, CNN-RNNs over frames,
ConvLSTM, and the temporal-convolution, (2+1)D, frame-mean and frame-max
baselines; a 2D U-Net with a ConvLSTM across the slices of a volume
(:mod:`~medjax.models.sequence.unet_convlstm`), the CNN-LSTM captioner
(:mod:`~medjax.models.sequence.captioner`), and the loss gradient per input frame
(:mod:`~medjax.models.sequence.gradients`).

Every frame model takes ``__call__(x [B, T, H, W, C], *, train, seq_lengths=None)``
and returns ``[B, num_outputs]``, or ``[B, T, num_outputs]`` with ``per_frame``;
``seq_lengths [B]`` marks how many leading frames of each sequence are valid
(:mod:`~medjax.models.sequence.masking`). Presets (a tiny one of each for
tests) sit at the bottom of each module.
"""

from medjax.models.sequence.cnn_recurrent import (
    ENCODER_KINDS,
    SequenceClassifier,
    cnn_bilstm_small,
    cnn_bilstm_tiny,
    cnn_gru_small,
    cnn_gru_tiny,
    cnn_lstm_small,
    cnn_lstm_tiny,
    cnn_rnn_small,
    cnn_rnn_tiny,
    frame_max_small,
    frame_max_tiny,
    frame_mean_small,
    frame_mean_tiny,
    temporal_conv_small,
    temporal_conv_tiny,
)
from medjax.models.sequence.convlstm import (
    ConvLSTMClassifier,
    ConvLSTMEncoder,
    convlstm_small,
    convlstm_tiny,
)
from medjax.models.sequence.gradients import input_gradient_norms
from medjax.models.sequence.r2plus1d import (
    R2Plus1DClassifier,
    r2plus1d_small,
    r2plus1d_tiny,
)
from medjax.models.sequence.recurrent import (
    CELLS,
    RecurrentEncoder,
    recurrent_cell,
)
from medjax.models.sequence.temporal_conv import TemporalConvEncoder
from medjax.models.sequence.unet_convlstm import (
    UNetConvLSTM,
    unet_convlstm_small,
    unet_convlstm_tiny,
)

__all__ = [
    "CELLS",
    "ENCODER_KINDS",
    "ConvLSTMClassifier",
    "ConvLSTMEncoder",
    "R2Plus1DClassifier",
    "RecurrentEncoder",
    "SequenceClassifier",
    "TemporalConvEncoder",
    "UNetConvLSTM",
    "cnn_bilstm_small",
    "cnn_bilstm_tiny",
    "cnn_gru_small",
    "cnn_gru_tiny",
    "cnn_lstm_small",
    "cnn_lstm_tiny",
    "cnn_rnn_small",
    "cnn_rnn_tiny",
    "convlstm_small",
    "convlstm_tiny",
    "frame_max_small",
    "frame_max_tiny",
    "frame_mean_small",
    "frame_mean_tiny",
    "input_gradient_norms",
    "r2plus1d_small",
    "r2plus1d_tiny",
    "recurrent_cell",
    "temporal_conv_small",
    "temporal_conv_tiny",
    "unet_convlstm_small",
    "unet_convlstm_tiny",
]
