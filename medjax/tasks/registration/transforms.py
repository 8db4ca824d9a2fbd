"""The transforms iterative registration optimises, as parameter pytrees.

A transform maps fixed-image voxel coordinates to moving-image voxel coordinates
(ITK's convention: the fixed image is sampled on its own grid and the moving
image is read at ``T(x)``), so the warped moving image is ``moving(T(x))`` and
its pull-back displacement (``medjax.ops.displacement``) is ``T(x) - x``.

- ``translation``: ``T(x) = x + t``;
- ``rigid``: ``T(x) = c + t + R (x - c)`` about the fixed image's centre ``c``;
- ``affine``: ``T(x) = c + t + L (x - c)`` with ``L`` any matrix;
- ``bspline``: ``T(x) = A(x + u(x))``, ``u`` a cubic B-spline free-form
  deformation (``medjax.ops.bspline``) after an optional affine ``A``;
- ``dense``: ``T(x) = A(x + u(x))``, ``u`` a displacement per voxel of the
  pyramid level.

Parameters are scaled so that one unit moves the image's edge by about one
voxel: angles and the deviation of ``L`` from the identity are divided by the
image's radius. An optimiser's single step size then suits every parameter (as
ITK's parameter scales do).
"""

import math

import jax
import jax.numpy as jnp

from medjax.ops import bspline, spatial

LINEAR = ("translation", "rigid", "affine")
DEFORMABLE = ("bspline", "dense")
KINDS = LINEAR + DEFORMABLE


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"transform: expected one of {KINDS}, got {kind!r}")


def radius(shape: tuple[int, ...]) -> float:
    """Half the image's diagonal in voxels: the lever arm of the scaling."""
    return 0.5 * math.sqrt(sum((n - 1) ** 2 for n in shape))


def initial_linear_parameters(kind: str, ndim: int) -> dict[str, jnp.ndarray]:
    """The identity transform's parameters."""
    params = {"translation": jnp.zeros(ndim, jnp.float32)}
    if kind == "rigid":
        params["rotation"] = jnp.zeros(1 if ndim == 2 else 3, jnp.float32)
    elif kind == "affine":
        params["linear"] = jnp.zeros((ndim, ndim), jnp.float32)
    return params


def linear_matrix(kind: str, params: dict, shape: tuple[int, ...]) -> jnp.ndarray:
    """The ``[ndim+1, ndim+1]`` matrix of a linear transform's parameters
    (fixed voxel -> moving voxel)."""
    ndim = len(shape)
    center = spatial.image_center(shape)
    scale = 1.0 / radius(shape)
    if kind == "translation":
        return spatial.affine_matrix(ndim, translation=params["translation"])
    if kind == "rigid":
        angles = params["rotation"] * scale
        return spatial.affine_matrix(
            ndim, rotation=angles[0] if ndim == 2 else angles,
            translation=params["translation"], center=center,
        )
    linear = jnp.eye(ndim, dtype=jnp.float32) + params["linear"] * scale
    offset = center + params["translation"] - linear @ center
    matrix = jnp.eye(ndim + 1, dtype=jnp.float32)
    return matrix.at[:ndim, :ndim].set(linear).at[:ndim, ndim].set(offset)


def initial_deformable_parameters(
    kind: str, shape: tuple[int, ...], grid_spacing: int, level_shape: tuple[int, ...]
) -> dict[str, jnp.ndarray]:
    """Zero deformation: B-spline coefficients for the full image, or a dense
    field on the pyramid level's grid."""
    ndim = len(shape)
    if kind == "bspline":
        grid = bspline.control_grid_shape(shape, grid_spacing)
        return {"coefficients": jnp.zeros(grid + (ndim,), jnp.float32)}
    return {"displacement": jnp.zeros(tuple(level_shape) + (ndim,), jnp.float32)}


def deformation(
    kind: str, params: dict, positions: tuple, grid_spacing: int
) -> jnp.ndarray:
    """The deformable part ``u`` ``[*T, ndim]`` on the grid of ``positions``
    (one 1-D array of full-resolution voxel coordinates per axis)."""
    if kind == "bspline":
        return bspline.bspline_displacement(params["coefficients"], grid_spacing, positions)
    return params["displacement"]


def upsample_dense(
    params: dict, old_positions: tuple, new_positions: tuple
) -> dict:
    """A dense field carried from one pyramid level's grid to the next's by
    linear interpolation (edges extended). Values are in full-resolution voxels,
    so they are not rescaled.

    Args:
        params: ``{"displacement": [*T_old, ndim]}``.
        old_positions / new_positions: per axis, the full-resolution voxel
            coordinates of each level's grid points (evenly spaced).
    """
    field = params["displacement"]
    coords = []
    for old, new in zip(old_positions, new_positions):
        step = float(old[1] - old[0]) if len(old) > 1 else 1.0
        coords.append((jnp.asarray(new, jnp.float32) - float(old[0])) / step)
    grid = jnp.meshgrid(*coords, indexing="ij")
    resized = jnp.stack(
        [
            jax.scipy.ndimage.map_coordinates(field[..., axis], grid, order=1, mode="nearest")
            for axis in range(field.shape[-1])
        ],
        axis=-1,
    )
    return {"displacement": resized}
