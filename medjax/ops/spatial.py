"""Differentiable spatial transforms: sampling, affine matrices, points.

Dense displacement fields (warps, composition, inversion, Jacobians, random
fields) are in ``medjax.ops.displacement``.

Pure JAX, no other medjax import; every function is jit-able, vmap-able (callers
vmap over the batch) and, with linear interpolation, differentiable with respect
to the image, the coordinates and the transform parameters.

Conventions:

* Images are channels-last ``[*S, C]`` with spatial rank ``ndim`` = 2 or 3 and no
  batch axis; label maps are ``[*S]`` integer arrays.
* Coordinates are voxel indices in array-axis order ``(row, col[, depth])``; a
  point array is ``[K, ndim]``.
* Affine matrices are homogeneous ``[ndim+1, ndim+1]`` and *forward*: a point
  ``p`` of the input lands at ``A @ [p, 1]`` in the output. Images are warped by
  pulling back, ``out(x) = in(A^{-1} x)``; points are moved by ``A`` itself.
* A displacement field ``d [*S, ndim]`` (voxels) is a pull-back:
  ``out(x) = in(x + d(x))``.
* Points outside the image read ``cval`` exactly as
  ``scipy.ndimage.map_coordinates(mode='constant')`` does: a coordinate outside
  ``[0, n-1]`` on any axis gives ``cval``, with no blending towards ``cval``
  (``jax.scipy.ndimage.map_coordinates(mode='constant')`` blends, like scipy's
  ``'grid-constant'``).
"""

import functools

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def identity_grid(shape: tuple[int, ...]) -> jnp.ndarray:
    """Voxel coordinates of every voxel of a grid.

    Args:
        shape: spatial shape ``S`` (static).

    Returns:
        ``[*S, ndim]`` float32, ``grid[i, j, ...] = (i, j, ...)``.
    """
    axes = [jnp.arange(n, dtype=jnp.float32) for n in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def _spatial_shape(image: jnp.ndarray, ndim: int, name: str) -> tuple[int, ...]:
    """Spatial shape of an image ``[*S, C]`` or a label map ``[*S]`` of rank ndim."""
    if image.ndim == ndim + 1:
        return tuple(image.shape[:-1])
    if image.ndim == ndim:
        return tuple(image.shape)
    raise ValueError(
        f"{name}: expected an image [*S, C] or a label map [*S] with {ndim} spatial "
        f"axes, got shape {tuple(image.shape)}"
    )


def _check_order(order: int) -> None:
    if order not in (0, 1):
        raise ValueError(f"order: expected 0 (nearest) or 1 (linear), got {order!r}")


def map_channels(
    image: jnp.ndarray, coords: jnp.ndarray, order: int, mode: str
) -> jnp.ndarray:
    """map_coordinates of ``image [*S]`` or ``[*S, C]`` at ``coords [*T, ndim]``."""
    ndim = coords.shape[-1]
    axes = [coords[..., i] for i in range(ndim)]

    def one_channel(channel):
        return map_coordinates(channel, axes, order=order, mode=mode)

    if image.ndim == ndim:
        return one_channel(image)
    return jax.vmap(one_channel, in_axes=-1, out_axes=-1)(image)


@functools.partial(jax.jit, static_argnames=("order",))
def sample(
    image: jnp.ndarray, coords: jnp.ndarray, *, order: int = 1, cval: float = 0.0
) -> jnp.ndarray:
    """Interpolate an image at arbitrary voxel coordinates.

    Matches ``scipy.ndimage.map_coordinates(mode='constant')``: a point whose
    coordinate lies outside ``[0, n-1]`` on any axis takes ``cval``. Order 0 rounds
    halves away from zero (scipy may differ exactly at ``.5``). Integer images
    interpolated linearly are rounded back to their dtype.

    Args:
        image: ``[*S, C]`` image or ``[*S]`` label map.
        coords: ``[*T, ndim]`` voxel coordinates in array-axis order.
        order: 1 for linear, 0 for nearest-neighbour interpolation (static).
        cval: value of points outside the image.

    Returns:
        ``[*T, C]`` (or ``[*T]`` for a label map), in the dtype of ``image``.
    """
    _check_order(order)
    ndim = coords.shape[-1]
    shape = _spatial_shape(image, ndim, "image")
    coords = jnp.asarray(coords)
    if not jnp.issubdtype(coords.dtype, jnp.floating):
        coords = coords.astype(jnp.float32)
    # Clamped sampling, then cval wherever a coordinate leaves [0, n-1].
    values = map_channels(image, coords, order, "nearest")
    upper = jnp.asarray(shape, coords.dtype) - 1
    inside = jnp.all((coords >= 0) & (coords <= upper), axis=-1)
    if image.ndim == ndim + 1:
        inside = inside[..., None]
    return jnp.where(inside, values, jnp.asarray(cval, values.dtype))


def _vector(value, ndim: int, name: str) -> jnp.ndarray:
    value = jnp.asarray(value, dtype=jnp.float32)
    if value.shape != (ndim,):
        raise ValueError(f"{name}: expected shape ({ndim},), got {value.shape}")
    return value


def _plane_rotation(ndim: int, i: int, j: int, angle: jnp.ndarray) -> jnp.ndarray:
    """Rotation by ``angle`` in the (i, j) plane, turning axis i towards axis j."""
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    matrix = jnp.eye(ndim, dtype=jnp.float32)
    matrix = matrix.at[i, i].set(cos).at[j, j].set(cos)
    return matrix.at[j, i].set(sin).at[i, j].set(-sin)


def _rotation(ndim: int, rotation) -> jnp.ndarray:
    angles = jnp.asarray(rotation, dtype=jnp.float32)
    if ndim == 2:
        if angles.shape != ():
            raise ValueError(
                f"rotation: expected a scalar angle in 2D, got shape {angles.shape}"
            )
        return _plane_rotation(2, 0, 1, angles)
    if angles.shape != (3,):
        raise ValueError(f"rotation: expected 3 angles in 3D, got shape {angles.shape}")
    # About axis k means in the plane of the two other axes, right-handed.
    about_0 = _plane_rotation(3, 1, 2, angles[0])
    about_1 = _plane_rotation(3, 2, 0, angles[1])
    about_2 = _plane_rotation(3, 0, 1, angles[2])
    return about_2 @ about_1 @ about_0


def _shear(ndim: int, shear) -> jnp.ndarray:
    values = jnp.asarray(shear, dtype=jnp.float32)
    matrix = jnp.eye(ndim, dtype=jnp.float32)
    if ndim == 2:
        if values.shape != ():
            raise ValueError(f"shear: expected a scalar in 2D, got {values.shape}")
        return matrix.at[0, 1].set(values)
    if values.shape != (3,):
        raise ValueError(f"shear: expected 3 values in 3D, got shape {values.shape}")
    matrix = matrix.at[0, 1].set(values[0]).at[0, 2].set(values[1])
    return matrix.at[1, 2].set(values[2])


@functools.partial(jax.jit, static_argnames=("ndim",))
def affine_matrix(
    ndim: int,
    *,
    rotation=None,
    translation=None,
    zoom=None,
    shear=None,
    flip=None,
    center=None,
) -> jnp.ndarray:
    """Forward affine matrix ``x' = center + T + R @ Sh @ Z @ F @ (x - center)``.

    Every parameter may be a traced value (jit, vmap, grad); ``None`` leaves that
    part out.

    Args:
        ndim: spatial rank, 2 or 3 (static).
        rotation: radians. 2D: a scalar; a positive angle turns axis 0 (row)
            towards axis 1 (col), ``R = [[cos, -sin], [sin, cos]]``. 3D: ``[3]``
            angles about axes 0, 1 and 2 (right-handed: about axis 0 turns axis 1
            towards 2, about 1 turns 2 towards 0, about 2 turns 0 towards 1),
            applied in that order, ``R = R_2 @ R_1 @ R_0``.
        translation: ``[ndim]`` voxels.
        zoom: ``[ndim]`` scale factors; > 1 enlarges the content.
        shear: 2D a scalar ``s`` with ``x0' = x0 + s * x1``; 3D ``[3]`` values for
            the (0, 1), (0, 2) and (1, 2) planes (``Sh[0, 1], Sh[0, 2], Sh[1, 2]``).
        flip: ``[ndim]`` booleans or 0/1 floats; flipping axis i maps
            ``x_i - c_i`` to ``c_i - x_i``.
        center: ``[ndim]`` voxel coordinates of the fixed point of the linear
            part, default the origin (see ``image_center``).

    Returns:
        ``[ndim+1, ndim+1]`` float32 homogeneous matrix.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim: expected 2 or 3, got {ndim!r}")
    linear = jnp.eye(ndim, dtype=jnp.float32)
    if flip is not None:
        linear = jnp.diag(1.0 - 2.0 * _vector(flip, ndim, "flip"))
    if zoom is not None:
        linear = _vector(zoom, ndim, "zoom")[:, None] * linear
    if shear is not None:
        linear = _shear(ndim, shear) @ linear
    if rotation is not None:
        linear = _rotation(ndim, rotation) @ linear
    offset = jnp.zeros(ndim, jnp.float32)
    if translation is not None:
        offset = _vector(translation, ndim, "translation")
    if center is not None:
        center = _vector(center, ndim, "center")
        offset = offset + center - linear @ center
    matrix = jnp.eye(ndim + 1, dtype=jnp.float32)
    return matrix.at[:ndim, :ndim].set(linear).at[:ndim, ndim].set(offset)


def image_center(shape: tuple[int, ...]) -> jnp.ndarray:
    """Centre of a grid of spatial shape ``S``: ``[ndim]`` float32, ``(S - 1) / 2``."""
    return jnp.asarray([(n - 1) / 2 for n in shape], dtype=jnp.float32)


def check_matrix(matrix: jnp.ndarray) -> int:
    if tuple(matrix.shape) not in ((3, 3), (4, 4)):
        raise ValueError(
            f"matrix: expected a homogeneous [ndim+1, ndim+1] matrix with ndim 2 or "
            f"3, got shape {tuple(matrix.shape)}"
        )
    return matrix.shape[0] - 1


def apply_homogeneous(matrix: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    """``matrix`` applied to ``points [..., ndim]``."""
    ndim = matrix.shape[0] - 1
    return points @ matrix[:ndim, :ndim].T + matrix[:ndim, ndim]


def _inverse_linear(m: jnp.ndarray) -> jnp.ndarray:
    """Inverse of a 2x2 or 3x3 matrix by its adjugate (cheaper to compile and to
    differentiate than the LU of jnp.linalg.inv at this size)."""
    if m.shape[0] == 2:
        adjugate = jnp.array([[m[1, 1], -m[0, 1]], [-m[1, 0], m[0, 0]]])
        return adjugate / (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])
    columns = [jnp.cross(m[1], m[2]), jnp.cross(m[2], m[0]), jnp.cross(m[0], m[1])]
    return jnp.stack(columns, axis=-1) / jnp.dot(m[0], columns[0])


def invert_affine(matrix: jnp.ndarray) -> jnp.ndarray:
    """Inverse of a homogeneous affine matrix (exact last row)."""
    ndim = matrix.shape[0] - 1
    linear = _inverse_linear(matrix[:ndim, :ndim])
    inverse = jnp.eye(ndim + 1, dtype=linear.dtype)
    inverse = inverse.at[:ndim, :ndim].set(linear)
    return inverse.at[:ndim, ndim].set(-linear @ matrix[:ndim, ndim])


@jax.jit
def transform_points(matrix: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    """Move points by a forward affine matrix.

    Args:
        matrix: ``[ndim+1, ndim+1]`` forward matrix.
        points: ``[K, ndim]`` voxel coordinates.

    Returns:
        ``[K, ndim]``, where the content at each point lands after
        ``warp_affine(image, matrix)``.
    """
    ndim = check_matrix(matrix)
    if points.shape[-1] != ndim:
        raise ValueError(
            f"points: expected [K, {ndim}] for a {ndim}D matrix, got {points.shape}"
        )
    return apply_homogeneous(matrix, points)


def warp_affine(
    image: jnp.ndarray,
    matrix: jnp.ndarray,
    *,
    order: int = 1,
    cval: float = 0.0,
    output_shape: tuple[int, ...] | None = None,
) -> jnp.ndarray:
    """Warp an image by a forward affine matrix: ``out(x) = image(A^{-1} x)``.

    Equal to ``scipy.ndimage.affine_transform(image, inv(A), mode='constant')``
    per channel.

    Args:
        image: ``[*S, C]`` image or ``[*S]`` label map.
        matrix: ``[ndim+1, ndim+1]`` forward matrix.
        order: 1 linear, 0 nearest (use 0 for label maps).
        cval: value where the pull-back leaves the image.
        output_shape: spatial shape ``T`` of the output (static), default ``S``.

    Returns:
        ``[*T, C]`` (or ``[*T]``).
    """
    if output_shape is not None:
        output_shape = tuple(int(n) for n in output_shape)
    return _warp_affine(image, matrix, order, cval, output_shape)


@functools.partial(jax.jit, static_argnums=(2, 4))
def _warp_affine(image, matrix, order, cval, output_shape):
    ndim = check_matrix(matrix)
    shape = _spatial_shape(image, ndim, "image")
    output_shape = shape if output_shape is None else output_shape
    coords = apply_homogeneous(invert_affine(matrix), identity_grid(output_shape))
    return sample(image, coords, order=order, cval=cval)
