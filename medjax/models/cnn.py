"""Convolutional classifiers for 2D images and 3D volumes: plain CNNs and ResNets.

A stem, then stages of conv-norm-ReLU blocks (plain, or residual basic blocks as in
He et al. 2016); every stage after the first halves the resolution with a strided
first block. Global average pooling gives the features; dropout and a dense head
give the logits.

Parameter names are part of the interface (checkpoints are loaded by path): the
feature extractor is the subtree ``backbone`` (``stem_conv``, ``stem_norm``, then
``stage{i}_block{j}``) and the classifier is ``head``; ``parameter_groups()``
declares the backbone and its stages for transfer learning.

Stems: ``small`` is one 3x3 convolution at full resolution (CIFAR-style, as
MedMNIST v2 uses for 28-pixel images); ``imagenet`` is the original 7x7 stride-2
convolution and 3x3 stride-2 max pooling (for 224-pixel images and volumes).
``frozen_stages`` runs the normalisation of the stem and of the first stages in
inference mode, so their batch statistics stay fixed while the rest trains
(transfer learning's ``feature_extractor`` and partial ``finetune``).

``conv_impl`` chooses how convolutions and the stem's max pooling run: 'xla'
(the default) is exactly ``nn.Conv`` and ``nn.max_pool`` and bitwise
reproducible; 'cpu' (or 'auto': 'cpu' on the CPU backend, 'xla' elsewhere) is the
same function with the same parameters in faster CPU formulations
(:mod:`medjax.models.fast_layers`, :mod:`medjax.models.fast_strided`), whose C++
weight gradient sums in a thread-dependent order: two runs differ by rounding.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.fast_layers import resolve_conv_impl
from medjax.models.fast_strided import StridedConv, max_pool
from medjax.models.groups import Backbone, ParameterGroups, Transferable, single_stage
from medjax.models.layers import activation, normalization

STEMS = ("small", "imagenet")
# Global pooling of the last feature maps: the mean (the usual classifier head) or
# the max, which keeps a small bright finding's response however little of the
# image it covers (weakly supervised detection: Oquab et al. 2015).
GLOBAL_POOLS = ("mean", "max")


class ConvBlock(nn.Module):
    """Two conv-norm-ReLU layers; with ``residual`` the input is added before the
    last ReLU (through a 1x1 projection when shape or width change)."""

    features: int
    spatial_dims: int
    stride: int = 1
    residual: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99
    activation: str = "relu"
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        kernel = (3,) * self.spatial_dims
        strides = (self.stride,) * self.spatial_dims
        act = activation(self.activation)
        norm = partial(
            normalization, self.norm, train=train, momentum=self.norm_momentum
        )
        # named as the nn.Conv layers were, so checkpoints load by path
        conv = partial(StridedConv, use_bias=False, impl=self.conv_impl)
        y = conv(self.features, kernel, strides=strides, name="Conv_0")(x)
        y = act(norm()(y))
        y = conv(self.features, kernel, name="Conv_1")(y)
        y = norm()(y)
        if self.residual:
            if x.shape[-1] != self.features or self.stride != 1:
                ones = (1,) * self.spatial_dims
                x = conv(self.features, ones, strides=strides, name="Conv_2")(x)
                x = norm()(x)
            y = y + x
        return act(y)


def stage_counts(
    blocks_per_stage: int | Sequence[int], num_stages: int
) -> tuple[int, ...]:
    """Blocks of each stage: one count for all stages, or one per stage."""
    if isinstance(blocks_per_stage, int):
        return (blocks_per_stage,) * num_stages
    counts = tuple(int(n) for n in blocks_per_stage)
    if len(counts) != num_stages:
        raise ValueError(
            f"model.blocks_per_stage: expected {num_stages} counts (one per width), "
            f"got {list(counts)}"
        )
    return counts


def backbone_stages(
    widths: Sequence[int], blocks_per_stage: int | Sequence[int], name: str
) -> Backbone:
    """The stages of a :class:`ConvBackbone` named ``name`` inside its parent:
    ``stage{i}_block{j}`` of each width, the stem with the first."""
    counts = stage_counts(blocks_per_stage, len(widths))
    stages = [
        tuple(f"{name}/stage{stage}_block{block}" for block in range(count))
        for stage, count in enumerate(counts)
    ]
    stages[0] = (f"{name}/stem_conv", f"{name}/stem_norm", *stages[0])
    return Backbone(name, tuple(stages))


class ConvBackbone(nn.Module):
    """Stem and stages, pooled to features ``[B, widths[-1]]``.

    Attributes: see :class:`CNNClassifier`; besides, ``feature_maps`` returns
    the output of every stage instead (a tuple, input side first, stage ``i``
    at ``1 / 2**i`` of the stem's resolution), for detectors that read
    spatial features (``medjax.models.detection``).
    """

    widths: Sequence[int] = (16, 32, 64, 128)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    spatial_dims: int = 2
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"
    feature_maps: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.global_pool not in GLOBAL_POOLS:
            raise ValueError(
                f"model.global_pool: expected one of {GLOBAL_POOLS}, "
                f"got {self.global_pool!r}"
            )
        if self.stem not in STEMS:
            raise ValueError(f"model.stem: expected one of {STEMS}, got {self.stem!r}")
        if not 0 <= self.frozen_stages <= len(self.widths):
            raise ValueError(
                f"model.frozen_stages: expected 0..{len(self.widths)}, "
                f"got {self.frozen_stages}"
            )
        resolve_conv_impl(self.conv_impl)  # raises on an unknown name
        counts = stage_counts(self.blocks_per_stage, len(self.widths))
        dims = self.spatial_dims
        stem_train = train and self.frozen_stages == 0
        conv = partial(StridedConv, use_bias=False, impl=self.conv_impl)
        if self.stem == "small":
            x = conv(self.widths[0], (3,) * dims, name="stem_conv")(x)
        else:
            x = conv(
                self.widths[0],
                (7,) * dims,
                strides=(2,) * dims,
                padding=[(3, 3)] * dims,
                name="stem_conv",
            )(x)
        stem_norm = normalization(
            self.norm, train=stem_train, momentum=self.norm_momentum, name="stem_norm"
        )
        x = activation(self.activation)(stem_norm(x))
        if self.stem == "imagenet":
            window, strides = (3,) * dims, (2,) * dims
            x = max_pool(x, window, strides, [(1, 1)] * dims, self.conv_impl)
        stage_outputs = []
        for stage, (width, count) in enumerate(zip(self.widths, counts)):
            stage_train = train and stage >= self.frozen_stages
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ConvBlock(
                    width,
                    dims,
                    stride,
                    self.residual,
                    self.norm,
                    self.norm_momentum,
                    self.activation,
                    self.conv_impl,
                    name=f"stage{stage}_block{block}",
                )(x, train=stage_train)
            stage_outputs.append(x)
        if self.feature_maps:
            return tuple(stage_outputs)
        pool = jnp.max if self.global_pool == "max" else jnp.mean
        return pool(x, axis=tuple(range(1, 1 + dims)))


# The fields a model shares with the ConvBackbone it builds (besides ``widths``,
# ``spatial_dims`` and its name).
BACKBONE_FIELDS = (
    "blocks_per_stage",
    "residual",
    "norm",
    "norm_momentum",
    "stem",
    "frozen_stages",
    "activation",
    "conv_impl",
    "global_pool",
)


def backbone_like(
    model: nn.Module, *, spatial_dims: int, name: str = "backbone"
) -> ConvBackbone:
    """The ``ConvBackbone`` that ``model``'s own backbone fields describe
    (``widths`` and ``BACKBONE_FIELDS``, as :class:`CNNClassifier` has them)."""
    return ConvBackbone(
        widths=tuple(model.widths),
        spatial_dims=spatial_dims,
        name=name,
        **{field: getattr(model, field) for field in BACKBONE_FIELDS},
    )


class OptionalBackboneTransfer(Transferable):
    """Transfer hooks of a model whose ``backbone`` field is a module or None,
    None meaning the ``ConvBackbone`` its own fields describe
    (:func:`backbone_like`): the CNN-RNNs and the captioner. Stages come from the
    fields, not from a backbone built here (a module made inside an unbound
    module's method would need a scope)."""

    def parameter_groups(self) -> ParameterGroups:
        chosen = self.backbone
        if chosen is None:
            stages = backbone_stages(self.widths, self.blocks_per_stage, "backbone")
        elif isinstance(chosen, ConvBackbone):
            stages = backbone_stages(chosen.widths, chosen.blocks_per_stage, "backbone")
        else:
            stages = single_stage("backbone", ["backbone"])
        return ParameterGroups((stages,))

    def with_frozen_statistics(self, num_stages: int):
        if self.backbone is None:
            return self.clone(frozen_stages=num_stages)
        if isinstance(self.backbone, ConvBackbone):
            return self.clone(backbone=self.backbone.clone(frozen_stages=num_stages))
        return None


class CNNClassifier(nn.Module, Transferable):
    """Image or volume classifier.

    Attributes:
        num_classes: number of output logits.
        widths: channels of each stage; stage ``i > 0`` runs at 1/2**i of the
            stem's resolution.
        blocks_per_stage: ConvBlocks per stage: one count, or one per stage
            (ResNet-34: ``(3, 4, 6, 3)``).
        residual: residual (ResNet basic) blocks instead of plain ones.
        spatial_dims: 2 for images ``[B, H, W, C]``, 3 for volumes ``[B, H, W, D, C]``.
        norm: 'batch', 'instance', 'group' (4 channels per group) or 'none'
            (:func:`medjax.models.layers.normalization`).
        norm_momentum: BatchNorm running-average momentum (Flax's default 0.99
            averages over about 100 steps, steadying evaluation).
        stem: 'small' (3x3, full resolution) or 'imagenet' (7x7/2 and max pool).
        frozen_stages: the stem and this many first stages normalise with their
            running statistics even in training (their BatchNorm is frozen).
        dropout_rate: dropout before the dense head.
        activation: the blocks' nonlinearity
            (:func:`medjax.models.layers.activation`).
        conv_impl: 'xla' (default, reproducible), 'cpu' or 'auto' ('cpu' on the
            CPU backend, 'xla' elsewhere); the same function and parameters
            either way (see the module docstring).
        global_pool: 'mean' (default) or 'max' over the last feature maps.

    Parameter groups: the backbone ``backbone``, one stage per width (the stem
    with the first); the head ``head``.
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64, 128)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    spatial_dims: int = 2
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    dropout_rate: float = 0.0
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"

    def _backbone(self) -> ConvBackbone:
        return backbone_like(self, spatial_dims=self.spatial_dims)

    def parameter_groups(self) -> ParameterGroups:
        stages = backbone_stages(self.widths, self.blocks_per_stage, "backbone")
        return ParameterGroups((stages,))

    def with_frozen_statistics(self, num_stages: int) -> "CNNClassifier":
        return self.clone(frozen_stages=num_stages)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Maps ``x [B, *spatial, C]`` to logits ``[B, num_classes]``."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"CNNClassifier(spatial_dims={self.spatial_dims}) expects inputs of "
                f"rank {self.spatial_dims + 2} (batch, spatial..., channels), "
                f"got shape {x.shape}"
            )
        x = self._backbone()(x, train=train)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


RESNET_WIDTHS = (64, 128, 256, 512)
cnn_tiny = partial(CNNClassifier, widths=(4, 8), blocks_per_stage=1)
cnn_small = partial(CNNClassifier, widths=(16, 32, 64, 128), dropout_rate=0.1)
resnet_tiny = partial(
    CNNClassifier, widths=(4, 8, 8), blocks_per_stage=(1, 2, 1), residual=True
)
resnet_small = partial(
    CNNClassifier,
    widths=(32, 64, 128, 256),
    blocks_per_stage=2,
    residual=True,
    dropout_rate=0.1,
)
# He et al. 2016 (and Hara et al. 2018 in 3D): basic blocks, ResNet widths.
resnet10 = partial(
    CNNClassifier, widths=RESNET_WIDTHS, blocks_per_stage=(1, 1, 1, 1), residual=True
)
resnet18 = partial(
    CNNClassifier, widths=RESNET_WIDTHS, blocks_per_stage=(2, 2, 2, 2), residual=True
)
resnet34 = partial(
    CNNClassifier, widths=RESNET_WIDTHS, blocks_per_stage=(3, 4, 6, 3), residual=True
)
