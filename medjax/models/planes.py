"""Localisation in a volume as classification of its orthogonal planes (de Vos
et al. 2017, "ConvNet-based localization of anatomical structures in 3D medical
images"): one 2D backbone looks at every axial, coronal and sagittal slice of
the volume, and a head per orientation scores, for each landmark, how much
each slice holds it. The task turns each orientation's scores into a softmax
over its slices; the three maxima give the point.

A volume ``[B, X, Y, Z, C]`` (rows, columns, axial slices) is cut along each
axis ``a``: the ``X`` slices along axis 0 are ``[Y, Z]`` images, the ``Z``
slices along axis 2 are the ``[X, Y]`` axial images the 2D phantoms hold, so a
backbone trained on those transfers (``transfer.subtrees: {backbone:
backbone}``, the path of :class:`~medjax.models.cnn.CNNClassifier`'s).
``slice_context`` mixes the features of neighbouring slices (a 1D convolution
along the slice axis) and ``slice_position`` appends each slice's normalised
position, so that a structure spanning many slices (the aorta along z) can
still be placed; ``presence`` logits come from the axial features pooled over
slices.

Parameter names: ``backbone`` (the shared :class:`ConvBackbone`), per axis
``context_<a>`` and ``head_<a>``, and ``presence``.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.cnn import ConvBackbone, backbone_stages
from medjax.models.groups import ParameterGroups, Transferable


class OrthogonalPlanesLocator(nn.Module, Transferable):
    """Per-slice landmark logits of the three orientations of a volume.

    Attributes:
        num_landmarks: ``L``.
        widths, blocks_per_stage, residual, norm, norm_momentum, stem,
            frozen_stages, activation, conv_impl: the 2D backbone's
            (:class:`~medjax.models.cnn.ConvBackbone`).
        slice_context: width of the 1D convolution over neighbouring slices'
            features (1: none).
        slice_position: append each slice's position in [-1, 1] to its
            features.

    Returns (``__call__``): ``(logits_0 [B, X, L], logits_1 [B, Y, L],
    logits_2 [B, Z, L], presence [B, L])``.
    """

    num_landmarks: int
    widths: Sequence[int] = (8, 16, 32, 64)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    activation: str = "relu"
    conv_impl: str = "xla"
    slice_context: int = 5
    slice_position: bool = True

    def parameter_groups(self) -> ParameterGroups:
        stages = backbone_stages(self.widths, self.blocks_per_stage, "backbone")
        return ParameterGroups((stages,))

    def with_frozen_statistics(self, num_stages: int) -> "OrthogonalPlanesLocator":
        return self.clone(frozen_stages=num_stages)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, ...]:
        if x.ndim != 5:
            raise ValueError(
                "OrthogonalPlanesLocator expects volumes [B, X, Y, Z, C], "
                f"got shape {x.shape}"
            )
        if self.slice_context < 1 or self.slice_context % 2 != 1:
            raise ValueError(
                f"model.slice_context: expected an odd width >= 1, got {self.slice_context}"
            )
        backbone = ConvBackbone(
            widths=tuple(self.widths),
            blocks_per_stage=self.blocks_per_stage,
            residual=self.residual,
            spatial_dims=2,
            norm=self.norm,
            norm_momentum=self.norm_momentum,
            stem=self.stem,
            frozen_stages=self.frozen_stages,
            activation=self.activation,
            conv_impl=self.conv_impl,
            name="backbone",
        )
        batch, channels = x.shape[0], x.shape[-1]
        outputs, axial = [], None
        for axis in range(3):
            slices = jnp.moveaxis(x, axis + 1, 1)  # [B, S, h, w, C]
            count = slices.shape[1]
            images = slices.reshape(batch * count, *slices.shape[2:4], channels)
            features = backbone(images, train=train).reshape(batch, count, -1)
            if axis == 2:
                axial = features
            if self.slice_context > 1:
                conv = partial(nn.Conv, padding="SAME", name=f"context_{axis}")
                features = nn.relu(
                    conv(features.shape[-1], (self.slice_context,))(features)
                )
            if self.slice_position:
                position = jnp.linspace(-1.0, 1.0, count, dtype=features.dtype)
                position = jnp.broadcast_to(position[None, :, None], (batch, count, 1))
                features = jnp.concatenate([features, position], axis=-1)
            outputs.append(nn.Dense(self.num_landmarks, name=f"head_{axis}")(features))
        presence = nn.Dense(self.num_landmarks, name="presence")(axial.mean(axis=1))
        return (*outputs, presence)


planes_tiny = partial(OrthogonalPlanesLocator, widths=(4, 8), slice_context=3)
planes_small = partial(OrthogonalPlanesLocator, widths=(8, 16, 32, 64))
