"""Convolutional classifier for 2D images and 3D volumes.

A stem convolution, then stages of conv-norm-ReLU blocks (plain or residual, as in
He et al. 2016); every stage after the first halves the resolution with a strided
first block. Global average pooling, dropout and a dense head give the logits.
"""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _norm(kind: str, train: bool, momentum: float = 0.99) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=momentum)
    if kind == "group":
        return nn.GroupNorm(num_groups=None, group_size=4)
    if kind == "none":
        return lambda x: x
    raise ValueError(f"model.norm: expected 'batch', 'group' or 'none', got {kind!r}")


class ConvBlock(nn.Module):
    """Two conv-norm-ReLU layers; with ``residual`` the input is added before the
    last ReLU (through a 1x1 projection when shape or width change)."""

    features: int
    spatial_dims: int
    stride: int = 1
    residual: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        kernel = (3,) * self.spatial_dims
        strides = (self.stride,) * self.spatial_dims
        y = nn.Conv(self.features, kernel, strides, use_bias=False)(x)
        y = nn.relu(_norm(self.norm, train, self.norm_momentum)(y))
        y = nn.Conv(self.features, kernel, use_bias=False)(y)
        y = _norm(self.norm, train, self.norm_momentum)(y)
        if self.residual:
            if x.shape[-1] != self.features or self.stride != 1:
                ones = (1,) * self.spatial_dims
                x = nn.Conv(self.features, ones, strides, use_bias=False)(x)
                x = _norm(self.norm, train, self.norm_momentum)(x)
            y = y + x
        return nn.relu(y)


class CNNClassifier(nn.Module):
    """Image or volume classifier.

    Attributes:
        num_classes: number of output logits.
        widths: channels of each stage; stage ``i > 0`` runs at 1/2**i resolution.
        blocks_per_stage: ConvBlocks per stage.
        residual: residual (ResNet basic) blocks instead of plain ones.
        spatial_dims: 2 for images ``[B, H, W, C]``, 3 for volumes ``[B, H, W, D, C]``.
        norm: 'batch', 'group' or 'none'.
        norm_momentum: BatchNorm running-average momentum (Flax's default 0.99
            averages over about 100 steps, steadying evaluation).
        dropout_rate: dropout before the dense head.
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64, 128)
    blocks_per_stage: int = 1
    residual: bool = False
    spatial_dims: int = 2
    norm: str = "batch"
    norm_momentum: float = 0.99
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Maps ``x [B, *spatial, C]`` to logits ``[B, num_classes]``."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"CNNClassifier(spatial_dims={self.spatial_dims}) expects inputs of "
                f"rank {self.spatial_dims + 2} (batch, spatial..., channels), "
                f"got shape {x.shape}"
            )
        kernel = (3,) * self.spatial_dims
        x = nn.Conv(self.widths[0], kernel, use_bias=False)(x)
        x = nn.relu(_norm(self.norm, train, self.norm_momentum)(x))
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ConvBlock(
                    width, self.spatial_dims, stride, self.residual, self.norm,
                    self.norm_momentum,
                )(x, train=train)
        x = jnp.mean(x, axis=tuple(range(1, 1 + self.spatial_dims)))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


cnn_tiny = partial(CNNClassifier, widths=(4, 8), blocks_per_stage=1)
cnn_small = partial(CNNClassifier, widths=(16, 32, 64, 128), dropout_rate=0.1)
resnet_small = partial(
    CNNClassifier, widths=(32, 64, 128, 256), blocks_per_stage=2, residual=True,
    dropout_rate=0.1,
)
resnet18 = partial(
    CNNClassifier, widths=(64, 128, 256, 512), blocks_per_stage=2, residual=True
)
