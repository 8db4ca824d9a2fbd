"""VoxelMorph-style dense registration (Balakrishnan et al. 2019) and its
diffeomorphic variant (Dalca et al. 2019).

A U-Net trunk (``medjax.models.unet.UNet``, its 1x1 head giving ``features``
channels) and a 3x3(x3) flow convolution whose weights start at N(0, 1e-5) and
bias at zero, as VoxelMorph's: the untrained network predicts an almost zero
field, so training starts from the identity. With ``diffeomorphic=True`` that
output is a stationary velocity field, integrated by scaling and squaring
(``medjax.ops.displacement.integrate_velocity``, 7 steps as VoxelMorph-diff),
at ``1 / integration_downsize`` of the resolution and upsampled back (cheaper,
and smoother).
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.layers import activation
from medjax.models.unet import UNet
from medjax.ops import displacement as dense_fields


class VoxelMorph(nn.Module):
    """Dense registration network.

    Maps a pair ``x [B, *S, 2C]`` (fixed channels first, then moving) to a
    pull-back displacement ``[B, *S, ndim]`` in voxels, array-axis order:
    ``warped(x) = moving(x + d(x))``.

    Attributes:
        spatial_dims: 2 or 3.
        depth / base_width / widths / norm / conv_impl: the U-Net trunk's.
        features: channels of the trunk's output before the flow convolution.
        activation: of the trunk and before the flow convolution.
        diffeomorphic: the flow is a velocity field, integrated.
        integration_steps: scaling-and-squaring steps.
        integration_downsize: integrate at this fraction of the resolution
            (1: full resolution).
        flow_init_std: std of the flow convolution's initial weights.
    """

    spatial_dims: int = 2
    depth: int = 4
    base_width: int = 16
    widths: Sequence[int] | None = None
    norm: str = "none"
    features: int = 16
    activation: str = "leaky_relu"
    diffeomorphic: bool = False
    integration_steps: int = 7
    integration_downsize: int = 2
    flow_init_std: float = 1e-5
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        dims = self.spatial_dims
        if self.integration_downsize < 1:
            raise ValueError(
                f"model.integration_downsize: expected >= 1, got {self.integration_downsize}"
            )
        trunk = UNet(
            num_classes=self.features,
            spatial_dims=dims,
            depth=self.depth,
            base_width=self.base_width,
            widths=None if self.widths is None else tuple(self.widths),
            norm=self.norm,
            activation=self.activation,
            conv_impl=self.conv_impl,
            name="unet",
        )
        hidden = activation(self.activation)(trunk(x, train=train))
        flow = nn.Conv(
            dims,
            (3,) * dims,
            padding="SAME",
            kernel_init=nn.initializers.normal(self.flow_init_std),
            bias_init=nn.initializers.zeros,
            name="flow",
        )(hidden).astype(jnp.float32)
        if not self.diffeomorphic:
            return flow
        shape = tuple(flow.shape[1:-1])
        factor = self.integration_downsize
        low = tuple(max(2, -(-s // factor)) for s in shape)
        velocity = flow
        if low != shape:
            velocity = jax.vmap(lambda v: dense_fields.resize_displacement(v, low))(
                flow
            )
        field = jax.vmap(
            lambda v: dense_fields.integrate_velocity(v, self.integration_steps)
        )(velocity)
        if low != shape:
            field = jax.vmap(lambda d: dense_fields.resize_displacement(d, shape))(
                field
            )
        return field


voxelmorph_tiny = partial(VoxelMorph, depth=2, base_width=4, features=4)
# VoxelMorph's encoder (16, 32, 32, 32) at depth 3 for 64^2 on a CPU.
voxelmorph_small = partial(VoxelMorph, depth=3, widths=(16, 32, 32, 32), features=16)
voxelmorph_diff_tiny = partial(voxelmorph_tiny, diffeomorphic=True)
voxelmorph_diff_small = partial(voxelmorph_small, diffeomorphic=True)
