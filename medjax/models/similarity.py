"""A learned image similarity: a small fully convolutional network that scores
how well two co-located patches of two images (e.g. CT and MR) are aligned.

The lecture's "deep similarity" (Simonovsky et al. 2016): a CNN trained to tell
aligned patch pairs from misaligned ones, whose score then drives iterative
registration in place of a hand-made measure. The network sees the two images
stacked as channels and has no padding, so one output is the logit of one
``receptive_field``-wide patch pair; applied to whole images it gives a dense
map of logits, whose mean over the overlap is the similarity.
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp


class PatchSimilarityNet(nn.Module):
    """Conv-ReLU layers without padding, then a 1x1 logit.

    Attributes:
        widths: channels of each 3x3 convolution.
        dilations: dilation of each (the receptive field is
            ``1 + 2 * sum(dilations)``).
        spatial_dims: 2 or 3.
    """

    widths: Sequence[int] = (16, 16, 32, 32, 32)
    dilations: Sequence[int] = (1, 1, 2, 2, 2)
    spatial_dims: int = 2

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * sum(self.dilations)

    @nn.compact
    def __call__(self, pair: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """``pair [B, *S, 2]`` (fixed, moving) -> logits ``[B, *(S - rf + 1)]``."""
        if len(self.widths) != len(self.dilations):
            raise ValueError("PatchSimilarityNet: one dilation per width")
        x = pair
        for width, dilation in zip(self.widths, self.dilations):
            x = nn.Conv(width, (3,) * self.spatial_dims, padding="VALID",
                        kernel_dilation=dilation)(x)
            x = nn.relu(x)
        return nn.Conv(1, (1,) * self.spatial_dims)(x)[..., 0]


similarity_net_tiny = partial(PatchSimilarityNet, widths=(8, 8, 8), dilations=(1, 2, 2))
similarity_net_small = PatchSimilarityNet
