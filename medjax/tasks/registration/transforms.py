"""The transforms iterative registration optimises, as parameter pytrees.

A transform maps fixed-image voxel coordinates to moving-image voxel coordinates
(ITK's convention: the fixed image is sampled on its own grid and the moving
image is read at ``T(x)``), so the warped moving image is ``moving(T(x))`` and
its pull-back displacement (``medjax.ops.displacement``) is ``T(x) - x``.

- ``translation``: ``T(x) = x + t``;
- ``rigid``: ``T(x) = c + t + R (x - c)`` about the fixed image's centre ``c``;
- ``affine``: ``T(x) = c + t + L (x - c)`` with ``L`` any matrix;
- ``bspline``: ``T(x) = x + u(x)``, ``u`` a cubic B-spline free-form
  deformation (``medjax.ops.bspline``);
- ``dense``: ``T(x) = x + u(x)``, ``u`` a displacement per voxel of the
  pyramid level.

Parameters are scaled so that one unit moves the image's edge by about one
voxel (one mm with a voxel spacing): angles and the deviation of ``L`` from the
identity are divided by the image's radius. An optimiser's single step size
then suits every parameter (as ITK's parameter scales do).

An initial map ``A0`` (fixed voxel -> moving voxel: the images' own geometry,
or an earlier affine stage) is applied last: ``T = A0 ∘ T_params``.
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


def radius(shape: tuple[int, ...], spacing: tuple[float, ...] | None = None) -> float:
    """Half the image's diagonal (mm with ``spacing``, else voxels): the lever
    arm of the parameter scaling."""
    spacing = spacing or (1.0,) * len(shape)
    return 0.5 * math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing)))


def initial_linear_parameters(kind: str, ndim: int) -> dict[str, jnp.ndarray]:
    """The identity transform's parameters."""
    params = {"translation": jnp.zeros(ndim, jnp.float32)}
    if kind == "rigid":
        params["rotation"] = jnp.zeros(1 if ndim == 2 else 3, jnp.float32)
    elif kind == "affine":
        params["linear"] = jnp.zeros((ndim, ndim), jnp.float32)
    return params


def linear_matrix(
    kind: str,
    params: dict,
    shape: tuple[int, ...],
    spacing: tuple[float, ...] | None = None,
) -> jnp.ndarray:
    """The ``[ndim+1, ndim+1]`` voxel matrix of a linear transform's parameters.

    The transform is defined in millimetres when ``spacing`` is given (a
    rotation is then rigid in the patient even for anisotropic voxels, and the
    translation is in mm), about the image centre, and conjugated back to
    voxels: ``S^-1 M S`` with ``S = diag(spacing)``.
    """
    ndim = len(shape)
    scaling = jnp.asarray(spacing or (1.0,) * ndim, jnp.float32)
    center = spatial.image_center(shape) * scaling
    scale = 1.0 / radius(shape, spacing)
    if kind == "translation":
        matrix = spatial.affine_matrix(ndim, translation=params["translation"])
    elif kind == "rigid":
        angles = params["rotation"] * scale
        matrix = spatial.affine_matrix(
            ndim, rotation=angles[0] if ndim == 2 else angles,
            translation=params["translation"], center=center,
        )
    else:
        linear = jnp.eye(ndim, dtype=jnp.float32) + params["linear"] * scale
        offset = center + params["translation"] - linear @ center
        matrix = jnp.eye(ndim + 1, dtype=jnp.float32)
        matrix = matrix.at[:ndim, :ndim].set(linear).at[:ndim, ndim].set(offset)
    to_mm = jnp.diag(jnp.append(scaling, 1.0))
    to_voxels = jnp.diag(jnp.append(1.0 / scaling, 1.0))
    return to_voxels @ matrix @ to_mm


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
