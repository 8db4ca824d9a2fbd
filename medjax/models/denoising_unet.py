"""A U-Net that denoises: the autoencoder of Kascenas et al. (MIDL 2022), which
has no bottleneck code. Trained to remove coarse noise from healthy anatomy
(``task.noise_resolution``), it also "removes" lesions, whose residual is the
anomaly map.

Its skip connections would let it copy any input through; the noise on its
training inputs is what stops it learning the identity.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.unet import UNet


class DenoisingUNet(nn.Module):
    """U-Net mapping ``x [B, *S, C]`` to ``{"reconstruction": [B, *S,
    num_outputs]}`` (a linear head: intensities, not logits).

    Per-location features for feature-based anomaly scores are the encoder
    levels' outputs, ``unet/down_<level>`` (``medjax.inferers.anomaly``
    captures them).

    Attributes:
        spatial_dims: 2 or 3.
        num_outputs: channels of the reconstruction (those of the image).
        depth, base_width, widths, norm, upsample, conv_impl: the U-Net's
            (:class:`medjax.models.unet.UNet`).
    """

    spatial_dims: int = 2
    num_outputs: int = 1
    depth: int = 3
    base_width: int = 16
    widths: Sequence[int] | None = None
    norm: str = "batch"
    upsample: str = "transpose"
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        unet = UNet(
            num_classes=self.num_outputs,
            spatial_dims=self.spatial_dims,
            depth=self.depth,
            base_width=self.base_width,
            widths=None if self.widths is None else tuple(self.widths),
            norm=self.norm,
            upsample=self.upsample,
            conv_impl=self.conv_impl,
            name="unet",
        )
        return {"reconstruction": unet(x, train=train)}


denoising_unet_tiny = partial(DenoisingUNet, depth=2, base_width=4)
denoising_unet_small = partial(DenoisingUNet, depth=3, base_width=16)
