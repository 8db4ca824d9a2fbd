"""A 2D U-Net over the slices of a volume with a bidirectional ConvLSTM across
the slices at the bottleneck (in the spirit of Chen et al. 2016, "Combining fully
convolutional and recurrent neural networks for 3D biomedical image
segmentation", and Novikov et al. 2018's Sensor3D).

:class:`UNetConvLSTM` takes a volume ``[B, X, Y, Z, C]`` and returns per-voxel
logits ``[B, X, Y, Z, K]``, like :class:`~medjax.models.unet.UNet` with
``spatial_dims=3``, so ``task=segmentation`` uses it unchanged (3D patches in
training, 3D sliding windows in evaluation). Inside, the slices along the last
spatial axis ``Z`` (axial on the torso phantoms, whose volumes run caudal to
cranial there) are folded into the batch and go through the 2D U-Net itself
(the class subclasses :class:`~medjax.models.unet.UNet`, whose forward pass takes
a bottleneck hook). At the bottleneck, the ``Z`` slice
maps of each volume form a sequence that a bidirectional ConvLSTM (flax's
``ConvLSTMCell`` in ``nn.RNN`` / ``nn.Bidirectional``,
:func:`~medjax.models.sequence.convlstm.conv_lstm_layer`) reads in both
directions; a 1x1 convolution maps its two hidden maps back to the bottleneck
width and is *added* to the bottleneck features (a residual), and the 2D decoder
takes over, slice by slice again.

Why the bottleneck only: it holds the widest in-plane context at the lowest
resolution (``1/2**depth`` per axis), so the recurrence is cheap (its cost scales
with the map's area) and informs every voxel through the decoder; the skips carry
in-plane detail that the slice itself determines. Recurrence at the skips would
multiply the ConvLSTM's cost by up to ``4**depth`` on a CPU.

Why a residual: with ``recurrence=False`` the ConvLSTM and its projection are
simply not built, and the model *is* a 2D U-Net applied to each slice alone, its
parameters named and shaped as :class:`~medjax.models.unet.UNet`'s
(``down_i``, ``bottleneck``, ``upconv_i``, ``up_i``, ``head``): the slice-by-slice
2D baseline of a clean ablation, whose weights load into (or from) a 2D ``UNet``
and into the recurrent model, which only adds ``slices`` (the ConvLSTM) and
``slices_projection``.
"""

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.fast_layers import Conv
from medjax.models.sequence.convlstm import conv_lstm_layer
from medjax.models.unet import UNet


class UNetConvLSTM(UNet):
    """2D U-Net per slice, bidirectional ConvLSTM across slices at the bottleneck.

    Maps a volume ``x [B, X, Y, Z, C]`` to logits ``[B, X, Y, Z, num_classes]``.
    In-plane sizes ``X, Y`` of any value are zero-padded at the end to a multiple
    of ``2**depth`` and cropped back, as the U-Net does; ``Z`` (the slices, the
    sequence) may be any length.

    Attributes:
        num_classes, depth, base_width, widths, norm, num_groups, norm_momentum,
            residual, upsample, dropout_rate, conv_impl, activation,
            frozen_stages: of the 2D U-Net, as in :class:`~medjax.models.unet.UNet`
            (``spatial_dims`` stays 2: the U-Net runs on slices; no deep
            supervision). Batch statistics are taken over all slices of the batch.
        recurrence: run the ConvLSTM across slices; False gives the 2D U-Net
            applied slice by slice (the same parameters less the recurrence).
        lstm_features: ConvLSTM hidden channels per direction.
        lstm_kernel_size: in-plane kernel of the ConvLSTM's gate convolutions.
        bidirectional: read the slices in both directions (else caudal to
            cranial only: a slice sees only the slices before it).

    Parameter groups: the encoder (``down_0`` ... ``down_{depth-1}``,
    ``bottleneck``; one stage each) is the backbone, as in the U-Net; the
    ConvLSTM, its projection and the decoder are the head.
    """

    depth: int = 3
    base_width: int = 16
    recurrence: bool = True
    lstm_features: int = 32
    lstm_kernel_size: int = 3
    bidirectional: bool = True

    def _check(self, x: jnp.ndarray) -> None:
        name = type(self).__name__
        if x.ndim != 5:
            raise ValueError(
                f"{name} expects volumes [batch, x, y, slices, channels], "
                f"got shape {x.shape}"
            )
        if self.spatial_dims != 2:
            raise ValueError(
                f"{name}.spatial_dims: the U-Net runs on 2D slices, expected 2, "
                f"got {self.spatial_dims}"
            )
        if self.deep_supervision:
            raise ValueError(f"{name}.deep_supervision: not supported")
        super()._check(x[:, :, :, 0])  # the U-Net's options, on one slice

    def _across_slices(self, features: jnp.ndarray, batch: int) -> jnp.ndarray:
        """Bottleneck maps ``[B * Z, h, w, F]`` (slices of a volume adjacent) plus
        the 1x1-projected bidirectional ConvLSTM read of them across the slices."""
        sequences = features.reshape((batch, -1) + features.shape[1:])  # [B,Z,h,w,F]
        rnn = conv_lstm_layer(
            self.lstm_features, self.lstm_kernel_size, self.bidirectional, "slices"
        )
        hidden = rnn(sequences)  # [B, Z, h, w, H'], H' = (1 or 2) * lstm_features
        hidden = hidden.reshape((-1,) + hidden.shape[2:])
        projection = Conv(
            features.shape[-1], (1, 1), impl=self.conv_impl, name="slices_projection"
        )
        return features + projection(hidden)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Returns logits ``[B, X, Y, Z, num_classes]`` of ``x [B, X, Y, Z, C]``."""
        self._check(x)
        batch, size_x, size_y, slices, channels = x.shape
        # [B, X, Y, Z, C] -> [B, Z, X, Y, C] -> [B * Z, X, Y, C]: each volume's
        # slices adjacent in the folded batch, so they unfold back into sequences.
        folded = jnp.moveaxis(x, 3, 1).reshape(batch * slices, size_x, size_y, channels)
        mixer = partial(self._across_slices, batch=batch) if self.recurrence else None
        logits = self._segment(folded, train=train, bottleneck_mixer=mixer)
        logits = logits.reshape((batch, slices) + logits.shape[1:])
        return jnp.moveaxis(logits, 1, 3)  # [B, X, Y, Z, K]


unet_convlstm_tiny = partial(UNetConvLSTM, depth=2, base_width=4, lstm_features=4)
# unet_small's encoder and decoder (depth 3, widths 16..128) per slice and a
# 32-channel bidirectional ConvLSTM at the bottleneck.
unet_convlstm_small = partial(UNetConvLSTM, depth=3, base_width=16, lstm_features=32)
