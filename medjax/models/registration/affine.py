"""Direct regression of an affine transform from a fixed/moving pair: a
ConvBackbone (``medjax.models.cnn``) pooled to features and a dense head that
outputs the matrix's deviation from the identity.

The head regresses the matrix in normalised coordinates (each axis mapped to
[-1, 1] about the image centre), where a unit of every entry moves the image's
edge by about half the field of view whatever the grid size, and its weights
and bias start at zero, so the untrained network outputs exactly the identity
transform (no initial misregistration to unlearn).
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.cnn import ConvBackbone


def normalised_to_voxel(matrix: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Conjugate ``[..., n+1, n+1]`` matrices acting on normalised coordinates
    ``u = (x - c) / h`` (``c = h = (S - 1) / 2`` per axis) into voxel
    coordinates: ``N^-1 M N``."""
    ndim = len(shape)
    half = jnp.asarray([max(s - 1, 1) / 2.0 for s in shape], jnp.float32)
    centre = jnp.asarray([(s - 1) / 2.0 for s in shape], jnp.float32)
    to_unit = jnp.eye(ndim + 1, dtype=jnp.float32)
    to_unit = to_unit.at[:ndim, :ndim].set(jnp.diag(1.0 / half))
    to_unit = to_unit.at[:ndim, ndim].set(-centre / half)
    from_unit = jnp.eye(ndim + 1, dtype=jnp.float32)
    from_unit = from_unit.at[:ndim, :ndim].set(jnp.diag(half))
    from_unit = from_unit.at[:ndim, ndim].set(centre)
    return from_unit @ matrix @ to_unit


class AffineRegressor(nn.Module):
    """Affine registration network.

    Maps a pair ``x [B, *S, 2C]`` (fixed channels first, then moving) to the
    matrix ``[B, ndim+1, ndim+1]`` that sends a fixed-image voxel to its moving
    image voxel (``IterativeRegistration``'s ``matrix``); the pull-back
    displacement is ``d(x) = A x - x``.

    Attributes:
        spatial_dims: 2 or 3.
        widths / blocks_per_stage / residual / norm / activation / conv_impl /
            global_pool: the ConvBackbone's (``medjax.models.cnn``).
        hidden: width of a dense layer before the head (0: none).
    """

    spatial_dims: int = 2
    widths: Sequence[int] = (16, 32, 64, 128)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    norm: str = "batch"
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"
    hidden: int = 0

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        dims = self.spatial_dims
        if dims not in (2, 3) or x.ndim != dims + 2:
            raise ValueError(
                f"AffineRegressor(spatial_dims={self.spatial_dims}) expects inputs of "
                f"rank {dims + 2} (batch, spatial..., channels), got shape {x.shape}"
            )
        features = ConvBackbone(
            widths=tuple(self.widths),
            blocks_per_stage=self.blocks_per_stage,
            residual=self.residual,
            spatial_dims=dims,
            norm=self.norm,
            activation=self.activation,
            conv_impl=self.conv_impl,
            global_pool=self.global_pool,
            name="backbone",
        )(x, train=train)
        if self.hidden:
            features = nn.relu(nn.Dense(self.hidden, name="hidden")(features))
        delta = nn.Dense(
            dims * (dims + 1),
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            name="head",
        )(features).reshape(-1, dims, dims + 1)
        bottom = jnp.zeros((delta.shape[0], 1, dims + 1), jnp.float32)
        unit = jnp.eye(dims + 1, dtype=jnp.float32) + jnp.concatenate(
            [delta.astype(jnp.float32), bottom], axis=1
        )
        return normalised_to_voxel(unit, tuple(x.shape[1 : 1 + dims]))


affine_net_tiny = partial(AffineRegressor, widths=(4, 8))
affine_net_small = partial(AffineRegressor, widths=(16, 32, 64, 64), hidden=64)
