"""CenterNet (Zhou et al. 2019, "Objects as Points"), 2D and 3D, on a U-Net
trunk (``medjax.models.unet``).

The trunk maps the image to ``trunk_width`` features per voxel at the input's
resolution (output stride 1: the phantoms' lesions are 2 to 12 voxels across,
too small for the paper's stride 4; the offset head then learns the sub-voxel
position of the centre). Three heads read the ReLU of those features, each a
3x3(x3) convolution, ReLU and a 1x1 convolution, as in the paper:

- ``heatmap [B, *S, num_classes]``: centre logits, the bias of the last layer
  starting at -2.19 (CenterNet's prior, sigmoid 0.1) so the many negatives do
  not swamp the first steps;
- ``size [B, *S, ndim]``: the box's extent in voxels (``max - min + 1``);
- ``offset [B, *S, ndim]``: the centre minus the voxel it rounds to.

The loss and decoding are the task's (``medjax.tasks.detection.centernet``).
"""

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.fast_layers import Conv
from medjax.models.unet import UNet

#: CenterNet's initial heatmap bias, -log((1 - 0.1) / 0.1).
HEATMAP_PRIOR = -2.19


class CenterNet(nn.Module):
    """Centre heatmap, size and offset per voxel.

    Attributes:
        num_classes: heatmap channels (one per object class).
        spatial_dims: 2 or 3.
        depth / base_width / norm / residual: the U-Net trunk's
            (``medjax.models.unet.UNet``).
        trunk_width: the trunk's output features.
        head_width: the heads' hidden channels.
        conv_impl: ``auto``, ``xla`` or ``cpu`` (``medjax.models.fast_layers``).
    """

    num_classes: int = 1
    spatial_dims: int = 2
    depth: int = 3
    base_width: int = 16
    norm: str = "batch"
    residual: bool = False
    trunk_width: int = 32
    head_width: int = 32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """``x [B, *S, C]`` -> ``{"heatmap": [B, *S, num_classes], "size":
        [B, *S, ndim], "offset": [B, *S, ndim]}``."""
        features = UNet(
            num_classes=self.trunk_width,
            spatial_dims=self.spatial_dims,
            depth=self.depth,
            base_width=self.base_width,
            norm=self.norm,
            residual=self.residual,
            conv_impl=self.conv_impl,
            name="trunk",
        )(x, train=train)
        features = nn.relu(features)
        kernel = (3,) * self.spatial_dims
        point = (1,) * self.spatial_dims

        def head(name: str, width: int, use_bias: bool = True) -> jnp.ndarray:
            y = Conv(self.head_width, kernel, impl=self.conv_impl, name=f"{name}_0")(
                features
            )
            y = nn.relu(y)
            return Conv(
                width, point, use_bias=use_bias, impl=self.conv_impl, name=f"{name}_1"
            )(y)

        prior = self.param(
            "heatmap_bias", nn.initializers.constant(HEATMAP_PRIOR), (self.num_classes,)
        )
        return {
            "heatmap": head("heatmap", self.num_classes, use_bias=False) + prior,
            "size": head("size", self.spatial_dims),
            "offset": head("offset", self.spatial_dims),
        }


centernet_tiny = partial(CenterNet, depth=2, base_width=4, trunk_width=8, head_width=8)
centernet_small = partial(
    CenterNet, depth=3, base_width=16, trunk_width=32, head_width=32
)
