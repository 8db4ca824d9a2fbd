"""A (2+1)D CNN over frame sequences (R(2+1)D, Tran et al. 2018).

Every block factorises a 3D convolution into a spatial ``1 x k x k`` one per
frame and a temporal ``k x 1 x 1`` one across frames, each followed by
normalisation and the nonlinearity: spatio-temporal features from the first
layer on, unlike the CNN-RNN which mixes frames only after pooling. Stages after
the first halve the spatial resolution; time is never downsampled, so per-frame
outputs keep every frame. Frames past each sequence's end are zeroed before
every temporal convolution, so a valid frame sees the zero padding it would see
in the unpadded sequence (BatchNorm's training statistics still include them).

Parameter names: block ``i`` is ``block{i}`` (``spatial_conv``, ``spatial_norm``,
``temporal_conv``, ``temporal_norm``); the classifier is ``head``.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.layers import activation, normalization
from medjax.models.sequence.cnn_recurrent import check_frames
from medjax.models.sequence.masking import (
    masked_mean_over_time,
    valid_steps,
    zero_padded_steps,
)


class R2Plus1DBlock(nn.Module):
    """Spatial conv-norm-act per frame, then temporal conv-norm-act across them."""

    features: int
    stride: int = 1
    kernel_size: int = 3
    temporal_kernel: int = 3
    norm: str = "batch"
    norm_momentum: float = 0.99
    activation: str = "relu"

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool
    ) -> jnp.ndarray:
        """``x [B, T, H, W, C]``, ``mask [B, T]`` -> ``[B, T, H', W', features]``."""
        act = activation(self.activation)
        norm = partial(
            normalization, self.norm, train=train, momentum=self.norm_momentum
        )
        k, kt = self.kernel_size, self.temporal_kernel
        y = nn.Conv(
            self.features,
            (1, k, k),
            (1, self.stride, self.stride),
            use_bias=False,
            name="spatial_conv",
        )(x)
        y = act(norm(name="spatial_norm")(y))
        y = zero_padded_steps(y, mask)
        y = nn.Conv(self.features, (kt, 1, 1), use_bias=False, name="temporal_conv")(y)
        return act(norm(name="temporal_norm")(y))


class R2Plus1DClassifier(nn.Module):
    """Stages of (2+1)D blocks, pooled over space (and valid frames), a head.

    Attributes:
        num_outputs: outputs of the head.
        widths: channels of each stage (one block each); stage ``i > 0`` runs at
            1/2**i of the input's resolution.
        kernel_size: spatial kernel of every block.
        temporal_kernel: frames every temporal convolution spans.
        per_frame: one output per frame ``[B, T, num_outputs]``.
        norm, norm_momentum, activation: as in
            :class:`~medjax.models.cnn.CNNClassifier`.
        dropout_rate: dropout before the head.
    """

    num_outputs: int
    widths: Sequence[int] = (16, 32, 64)
    kernel_size: int = 3
    temporal_kernel: int = 3
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
        """Maps frames ``x [B, T, H, W, C]`` to ``[B, num_outputs]`` (mean over the
        valid frames), or ``[B, T, num_outputs]`` (zero at padded frames) with
        ``per_frame``."""
        check_frames(type(self).__name__, x)
        _, mask = valid_steps(seq_lengths, x)
        y = x
        for stage, width in enumerate(self.widths):
            y = R2Plus1DBlock(
                width,
                stride=2 if stage > 0 else 1,
                kernel_size=self.kernel_size,
                temporal_kernel=self.temporal_kernel,
                norm=self.norm,
                norm_momentum=self.norm_momentum,
                activation=self.activation,
                name=f"block{stage}",
            )(y, mask, train=train)
        frames = jnp.mean(y, axis=(2, 3))  # [B, T, C]
        summary = frames if self.per_frame else masked_mean_over_time(frames, mask)
        summary = nn.Dropout(self.dropout_rate, deterministic=not train)(summary)
        outputs = nn.Dense(self.num_outputs, name="head")(summary)
        return zero_padded_steps(outputs, mask) if self.per_frame else outputs


r2plus1d_tiny = partial(R2Plus1DClassifier, widths=(4, 8))
r2plus1d_small = partial(R2Plus1DClassifier, widths=(16, 32, 64), dropout_rate=0.1)
