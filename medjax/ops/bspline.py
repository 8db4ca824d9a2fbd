"""Cubic B-spline free-form deformations (Rueckert et al. 1999): a dense
displacement from a coarse grid of control-point coefficients.

The control points sit every ``spacing`` voxels with one extra point beyond
each end (cubic B-splines have a support of four control points), so a grid of
``K = ceil((n - 1) / spacing) + 3`` points covers an axis of ``n`` voxels. The
displacement at voxel ``x`` is ``sum_k c_k * B3(x / spacing - k + 1)``, separable
over the axes, evaluated as one small matrix product per axis: exact, cheap, and
differentiable in the coefficients. The field is evaluated at any (fractional)
voxel coordinates along each axis, so the same coefficients serve every level
of a multi-resolution pyramid.

Pure JAX and numpy (the weight matrices are constants); no medjax import.
"""

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def cubic_bspline(u: np.ndarray) -> np.ndarray:
    """The cubic B-spline kernel ``B3(u)``: support [-2, 2], peak 2/3 at 0, and
    its integer shifts sum to 1."""
    a = np.abs(u)
    return np.where(
        a < 1.0, (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0, np.where(a < 2.0, (2.0 - a) ** 3 / 6.0, 0.0)
    )


def control_grid_shape(shape: Sequence[int], spacing: int | Sequence[int]) -> tuple[int, ...]:
    """The number of control points per axis for an image of spatial shape
    ``shape`` with control points every ``spacing`` voxels."""
    spacings = _spacings(spacing, len(shape))
    return tuple(math.ceil((n - 1) / s) + 3 for n, s in zip(shape, spacings))


def _spacings(spacing, ndim: int) -> tuple[int, ...]:
    spacings = (spacing,) * ndim if np.ndim(spacing) == 0 else tuple(spacing)
    if len(spacings) != ndim or any(s <= 0 for s in spacings):
        raise ValueError(f"spacing: expected {ndim} positive values, got {spacing!r}")
    return tuple(int(s) for s in spacings)


def axis_weights(positions: np.ndarray, spacing: int, num_points: int) -> np.ndarray:
    """``[len(positions), num_points]`` B-spline weights of the control points
    of one axis at voxel ``positions`` (control point ``k`` sits at voxel
    ``(k - 1) * spacing``)."""
    u = np.asarray(positions, np.float64)[:, None] / spacing - (np.arange(num_points) - 1)
    return cubic_bspline(u).astype(np.float32)


def bspline_displacement(
    coefficients: jnp.ndarray,
    spacing: int | Sequence[int],
    positions: Sequence[np.ndarray],
) -> jnp.ndarray:
    """The free-form deformation's displacement on a grid of positions.

    Args:
        coefficients: ``[*K, ndim]`` control-point displacements (voxels), ``K``
            from ``control_grid_shape``.
        spacing: control-point spacing in voxels, one value or one per axis.
        positions: one 1-D array per axis of the (fractional) voxel coordinates
            to evaluate at, e.g. ``np.arange(n)`` for every voxel.

    Returns:
        ``[len(positions[0]), ..., ndim]`` float32 displacement.
    """
    ndim = coefficients.ndim - 1
    spacings = _spacings(spacing, ndim)
    field = coefficients.astype(jnp.float32)
    for axis in range(ndim):
        weights = jnp.asarray(axis_weights(positions[axis], spacings[axis],
                                           coefficients.shape[axis]))
        # Contract the control axis `axis` with the weights, keep it in place.
        field = jnp.moveaxis(jnp.tensordot(weights, field, axes=([1], [axis])), 0, axis)
    return field
