"""U-Net for 2D and 3D segmentation (Ronneberger et al. 2015; Cicek et al. 2016).

An encoder of ``depth + 1`` levels (two 3x3(x3) conv-norm-ReLU layers each, 2x2 max
pooling between levels) and a decoder that up-samples, concatenates the encoder's skip
connection and applies two more conv-norm-ReLU layers. A 1x1 convolution gives the
per-voxel logits. Convolutions use 'SAME' padding (the paper used 'VALID' and
cropped skips), so the output has the input's spatial shape.

Inputs of any spatial size are accepted: each axis is zero-padded *at the end* to the
next multiple of ``2**depth`` and the logits are cropped back. Normalisation
statistics (batch, instance, group) then include the padded zeros; feed sizes that
are multiples of ``2**depth`` when that matters.
"""

from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.fast_layers import Conv, UpConv, max_pool, resolve_conv_impl
from medjax.models.groups import ParameterGroups, Transferable, one_stage_each
from medjax.models.layers import NORMS, Norm, activation

UPSAMPLES = ("transpose", "resize")


class UNetBlock(nn.Module):
    """Two conv-norm-ReLU layers at one resolution. With ``residual`` the block input
    is added before the last ReLU, through a 1x1 conv + norm when widths differ."""

    features: int
    spatial_dims: int
    norm: str = "batch"
    num_groups: int = 8
    norm_momentum: float = 0.99
    residual: bool = False
    conv_impl: str = "auto"
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        kernel = (3,) * self.spatial_dims
        # a bias before a normalisation layer is redundant
        bias = self.norm == "none"
        act = activation(self.activation)

        def norm(index: int) -> Norm:
            # Named as the U-Net's own norm module was (``_Norm_0``, ...), so
            # checkpoints from before models.layers load unchanged.
            return Norm(
                self.norm, self.num_groups, self.norm_momentum, name=f"_Norm_{index}"
            )

        conv = partial(Conv, use_bias=bias, impl=self.conv_impl)
        y = conv(self.features, kernel)(x)
        y = act(norm(0)(y, train=train))
        y = conv(self.features, kernel)(y)
        y = norm(1)(y, train=train)
        if self.residual:
            if x.shape[-1] != self.features:
                x = conv(self.features, (1,) * self.spatial_dims)(x)
                x = norm(2)(x, train=train)
            y = y + x
        return act(y)


class UNet(nn.Module, Transferable):
    """U-Net segmentation network, channels-last.

    Maps ``x [B, *spatial, C]`` (``spatial`` of length ``spatial_dims``, any sizes)
    to logits ``[B, *spatial, num_classes]``.

    With ``deep_supervision=True`` and ``train=True`` the call returns a tuple
    ``(logits, aux_1, ..., aux_{depth-1})``: ``aux_i [B, *ceil(spatial / 2**i),
    num_classes]`` are logits of 1x1 heads on the decoder's level-``i`` features
    (1/2**i of the padded input, cropped consistently with the full-resolution
    logits), highest resolution first (a 1-tuple when ``depth <= 1``). With
    ``train=False`` only the full-resolution logits are returned, whatever
    ``deep_supervision`` says (the auxiliary heads are still built, so the
    parameters are the same in both modes).

    Attributes:
        num_classes: logits per voxel.
        spatial_dims: 2 for images ``[B, H, W, C]``, 3 for volumes ``[B, H, W, D, C]``.
        depth: number of 2x down-samplings; the bottleneck runs at 1/2**depth.
        base_width: channels at level 0; level ``i`` has ``base_width * 2**i``.
        widths: explicit channels per level (``depth + 1`` values, the bottleneck
            last), e.g. MONAI BasicUNet's ``(32, 32, 64, 128, 256)``; overrides
            ``base_width`` when given.
        norm: 'batch', 'instance', 'group' or 'none' (convolutions get a bias only
            with 'none').
        num_groups: groups for 'group' norm, reduced to the largest divisor of the
            width when it does not divide it.
        norm_momentum: BatchNorm running-average momentum.
        residual: residual double-conv blocks (1x1 projection when widths differ).
        upsample: 'transpose' (2x2 stride-2 transposed conv, as in the paper) or
            'resize' (linear interpolation to the skip's size, then a 1x1 conv).
        deep_supervision: also return lower-resolution logits in training.
        dropout_rate: dropout on the bottleneck features (training only; needs a
            'dropout' rng when > 0).
        conv_impl: 'auto' (default: 'cpu' on the CPU backend, 'xla' elsewhere),
            'xla' or 'cpu'; the same function and parameters either way
            (:mod:`medjax.models.fast_layers`).
        activation: the blocks' nonlinearity
            (:func:`medjax.models.layers.activation`).
        frozen_stages: the first this many encoder levels (``down_0``, ...,
            then the bottleneck) normalise with their running statistics even in
            training (transfer learning with a frozen encoder).

    Parameter groups: the encoder (``down_0`` ... ``down_{depth-1}``, then
    ``bottleneck``; one stage each) is the backbone; the decoder, the auxiliary
    heads and ``head`` are the head.
    """

    num_classes: int
    spatial_dims: int = 2
    depth: int = 4
    base_width: int = 32
    widths: tuple[int, ...] | None = None
    norm: str = "batch"
    num_groups: int = 8
    norm_momentum: float = 0.99
    residual: bool = False
    upsample: str = "transpose"
    deep_supervision: bool = False
    dropout_rate: float = 0.0
    conv_impl: str = "auto"
    activation: str = "relu"
    frozen_stages: int = 0

    def parameter_groups(self) -> ParameterGroups:
        levels = [f"down_{level}" for level in range(self.depth)]
        return ParameterGroups((one_stage_each("encoder", [*levels, "bottleneck"]),))

    def with_frozen_statistics(self, num_stages: int) -> "UNet":
        return self.clone(frozen_stages=num_stages)

    def _check(self, x: jnp.ndarray) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(
                f"UNet.spatial_dims: expected 2 or 3, got {self.spatial_dims}"
            )
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"UNet(spatial_dims={self.spatial_dims}) expects inputs of rank "
                f"{self.spatial_dims + 2} (batch, spatial..., channels), "
                f"got shape {x.shape}"
            )
        if self.norm not in NORMS:
            raise ValueError(f"UNet.norm: expected one of {NORMS}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(
                f"UNet.upsample: expected one of {UPSAMPLES}, got {self.upsample!r}"
            )
        resolve_conv_impl(self.conv_impl)  # raises on an unknown name
        if self.depth < 0:
            raise ValueError(f"UNet.depth: expected >= 0, got {self.depth}")
        if not 0 <= self.frozen_stages <= self.depth + 1:
            raise ValueError(
                f"UNet.frozen_stages: expected 0..{self.depth + 1}, "
                f"got {self.frozen_stages}"
            )
        if self.widths is not None and len(self.widths) != self.depth + 1:
            raise ValueError(
                f"UNet.widths: expected depth + 1 = {self.depth + 1} values, "
                f"got {tuple(self.widths)}"
            )

    def _width(self, level: int) -> int:
        if self.widths is not None:
            return int(self.widths[level])
        return self.base_width * 2**level

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, *, train: bool
    ) -> jnp.ndarray | tuple[jnp.ndarray, ...]:
        """Returns logits ``[B, *spatial, num_classes]`` (see the class docstring for
        the deep-supervision tuple)."""
        self._check(x)
        return self._segment(x, train=train)

    def _segment(
        self,
        x: jnp.ndarray,
        *,
        train: bool,
        bottleneck_mixer: Callable[[jnp.ndarray], jnp.ndarray] | None = None,
    ) -> jnp.ndarray | tuple[jnp.ndarray, ...]:
        """The network on a checked ``x`` (called from ``__call__``'s compact
        scope). ``bottleneck_mixer`` maps the bottleneck's features before the
        dropout: :class:`~medjax.models.sequence.unet_convlstm.UNetConvLSTM`
        mixes the slices of a volume there."""
        dims = self.spatial_dims
        spatial = x.shape[1 : 1 + dims]
        multiple = 2**self.depth
        padded = tuple(-(-s // multiple) * multiple for s in spatial)
        if padded != spatial:
            pad = [(0, 0)] + [(0, p - s) for s, p in zip(spatial, padded)] + [(0, 0)]
            x = jnp.pad(x, pad)

        block = partial(
            UNetBlock,
            spatial_dims=dims,
            norm=self.norm,
            num_groups=self.num_groups,
            norm_momentum=self.norm_momentum,
            residual=self.residual,
            conv_impl=self.conv_impl,
            activation=self.activation,
        )
        conv = partial(Conv, impl=self.conv_impl)
        window = (2,) * dims
        skips = []
        for level in range(self.depth):
            level_train = train and level >= self.frozen_stages
            x = block(self._width(level), name=f"down_{level}")(x, train=level_train)
            skips.append(x)
            x = max_pool(x, 2, self.conv_impl)
        bottleneck_train = train and self.depth >= self.frozen_stages
        x = block(self._width(self.depth), name="bottleneck")(x, train=bottleneck_train)
        if bottleneck_mixer is not None:
            x = bottleneck_mixer(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

        aux = []
        for level in reversed(range(self.depth)):
            width = self._width(level)
            skip = skips[level]
            if self.upsample == "transpose":
                x = UpConv(width, window, impl=self.conv_impl, name=f"upconv_{level}")(
                    x
                )
            else:
                shape = skip.shape[:-1] + x.shape[-1:]
                x = jax.image.resize(x, shape, method="linear")
                x = conv(width, (1,) * dims, name=f"upconv_{level}")(x)
            x = jnp.concatenate([skip, x], axis=-1)
            x = block(width, name=f"up_{level}")(x, train=train)
            if self.deep_supervision and level > 0:
                head = conv(self.num_classes, (1,) * dims, name=f"aux_{level}")
                aux.append((level, head(x)))

        logits = conv(self.num_classes, (1,) * dims, name="head")(x)
        logits = logits[(slice(None),) + tuple(slice(0, s) for s in spatial)]
        if not (self.deep_supervision and train):
            return logits
        outputs = [logits]
        for level, out in reversed(aux):  # highest resolution (level 1) first
            crop = tuple(slice(0, -(-s // 2**level)) for s in spatial)
            outputs.append(out[(slice(None),) + crop])
        return tuple(outputs)


unet_tiny = partial(UNet, depth=2, base_width=4)
unet_small = partial(UNet, depth=3, base_width=16, norm="batch")
# Ronneberger et al. 2015: widths 64..1024, no normalisation, transposed-conv
# up-sampling (31.0M parameters for 1 input channel and 2 classes).
unet_original = partial(UNet, depth=4, base_width=64, norm="none")
