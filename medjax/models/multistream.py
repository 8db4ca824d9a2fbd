"""Multistream CNN: one convolutional stream per view, fused late.

Each view of an example (a local patch, a downscaled context view, the three
orthogonal planes through a point; see :mod:`medjax.ops.views`) goes through its own
:class:`~medjax.models.cnn.ConvBackbone`, or through one shared backbone; the
pooled features of all streams are concatenated, optionally passed through a
hidden layer, and classified by a dense head (late fusion, as in the multi-view
nodule detector of Setio et al. 2016 and the 2.5D classifiers of Roth et al.
2014).

Parameter names are part of the interface (checkpoints are loaded by path): one
shared backbone is ``backbone``, separate ones are ``backbone_0``,
``backbone_1``, ... in the order of the views; inside each, ``stem_*`` and
``stage{i}_block{j}`` as in :mod:`medjax.models.cnn`. The optional hidden layer
is ``fusion`` and the classifier ``head``. ``parameter_groups()`` declares every
backbone, with its stages, for transfer learning; fusion and head are the head.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.cnn import (
    RESNET_WIDTHS,
    ConvBackbone,
    backbone_like,
    backbone_stages,
)
from medjax.models.groups import ParameterGroups, Transferable


class MultistreamCNN(nn.Module, Transferable):
    """Late-fusion classifier over several views of each example.

    Attributes:
        num_classes: number of output logits.
        num_streams: number of views (streams) the model takes.
        shared_weights: one backbone applied to every view (Siamese-style; views
            must then have the same number of spatial axes and channels) instead
            of one backbone per view. In training, BatchNorm's running
            statistics of a shared backbone are updated once per view, in order.
        widths, blocks_per_stage, residual, norm, norm_momentum, stem,
            frozen_stages: of every backbone, as in
            :class:`~medjax.models.cnn.CNNClassifier`.
        spatial_dims: spatial axes of the views: one int for all, or one per
            stream (3D local patch plus 2D planes: ``(3, 2, 2, 2)``).
        fusion_hidden: width of a hidden Dense+ReLU layer after concatenating the
            stream features; 0 for none (the head sees the features directly).
        dropout_rate: dropout before the head.
        activation: the backbones' nonlinearity.
        conv_impl: the backbones' convolutions (as in
            :class:`~medjax.models.cnn.CNNClassifier`).
        global_pool: the backbones' pooling of their last maps, 'mean' or 'max'.
    """

    num_classes: int
    num_streams: int
    shared_weights: bool = False
    widths: Sequence[int] = (16, 32, 64, 128)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    spatial_dims: int | Sequence[int] = 2
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    fusion_hidden: int = 0
    dropout_rate: float = 0.0
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"

    def _backbone_names(self) -> tuple[str, ...]:
        if self.shared_weights:
            return ("backbone",)
        return tuple(f"backbone_{index}" for index in range(self.num_streams))

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups(
            tuple(
                backbone_stages(self.widths, self.blocks_per_stage, name)
                for name in self._backbone_names()
            )
        )

    def with_frozen_statistics(self, num_stages: int) -> "MultistreamCNN":
        return self.clone(frozen_stages=num_stages)

    def _stream_dims(self) -> tuple[int, ...]:
        if isinstance(self.spatial_dims, int):
            return (self.spatial_dims,) * self.num_streams
        dims = tuple(int(d) for d in self.spatial_dims)
        if len(dims) != self.num_streams:
            raise ValueError(
                f"model.spatial_dims: expected one int or {self.num_streams} (one per "
                f"stream), got {list(dims)}"
            )
        if self.shared_weights and len(set(dims)) > 1:
            raise ValueError(
                f"model.spatial_dims: a shared backbone needs views with the same "
                f"number of spatial axes, got {list(dims)}"
            )
        return dims

    def _backbone(self, spatial_dims: int, name: str) -> ConvBackbone:
        return backbone_like(self, spatial_dims=spatial_dims, name=name)

    @nn.compact
    def __call__(self, views: Sequence[jnp.ndarray], *, train: bool) -> jnp.ndarray:
        """Maps ``num_streams`` views ``[B, *spatial_i, C_i]`` to logits
        ``[B, num_classes]``; views may differ in spatial size."""
        if not isinstance(views, (tuple, list)):
            raise TypeError(
                f"MultistreamCNN expects a tuple of {self.num_streams} views "
                f"[B, *spatial, C], got a single {type(views).__name__}"
            )
        if len(views) != self.num_streams:
            raise ValueError(
                f"MultistreamCNN(num_streams={self.num_streams}) got {len(views)} "
                f"views; model.num_streams must match the number of task.views"
            )
        dims = self._stream_dims()
        for index, (view, d) in enumerate(zip(views, dims)):
            if view.ndim != d + 2:
                raise ValueError(
                    f"MultistreamCNN: view {index} should have rank {d + 2} "
                    f"(batch, {d} spatial, channels), got shape {view.shape}"
                )
            if view.shape[0] != views[0].shape[0]:
                raise ValueError(
                    f"MultistreamCNN: views have different batch sizes, "
                    f"{[v.shape[0] for v in views]}"
                )
        names = self._backbone_names()
        if self.shared_weights:
            # Applied view by view (not concatenated along the batch) so views of
            # different sizes work and each view is normalised by its own
            # statistics, exactly as a separate backbone with tied weights.
            backbone = self._backbone(dims[0], names[0])
            features = [backbone(view, train=train) for view in views]
        else:
            features = [
                self._backbone(d, name)(view, train=train)
                for name, view, d in zip(names, views, dims)
            ]
        x = jnp.concatenate(features, axis=-1)
        if self.fusion_hidden:
            x = nn.relu(nn.Dense(self.fusion_hidden, name="fusion")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


multistream_tiny = partial(MultistreamCNN, widths=(4, 8), blocks_per_stage=1)
multistream_small = partial(
    MultistreamCNN,
    widths=(16, 32, 64),
    blocks_per_stage=1,
    residual=True,
    fusion_hidden=64,
    dropout_rate=0.1,
)
multistream_resnet18 = partial(
    MultistreamCNN,
    widths=RESNET_WIDTHS,
    blocks_per_stage=(2, 2, 2, 2),
    residual=True,
)
