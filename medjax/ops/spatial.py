"""Differentiable spatial transforms: sampling, affine matrices and dense warps.

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
import math

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


def _map_channels(
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
    values = _map_channels(image, coords, order, "nearest")
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


def _check_matrix(matrix: jnp.ndarray) -> int:
    if tuple(matrix.shape) not in ((3, 3), (4, 4)):
        raise ValueError(
            f"matrix: expected a homogeneous [ndim+1, ndim+1] matrix with ndim 2 or "
            f"3, got shape {tuple(matrix.shape)}"
        )
    return matrix.shape[0] - 1


def _apply(matrix: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
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


def _inverse(matrix: jnp.ndarray) -> jnp.ndarray:
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
    ndim = _check_matrix(matrix)
    if points.shape[-1] != ndim:
        raise ValueError(
            f"points: expected [K, {ndim}] for a {ndim}D matrix, got {points.shape}"
        )
    return _apply(matrix, points)


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
    ndim = _check_matrix(matrix)
    shape = _spatial_shape(image, ndim, "image")
    output_shape = shape if output_shape is None else output_shape
    coords = _apply(_inverse(matrix), identity_grid(output_shape))
    return sample(image, coords, order=order, cval=cval)


@functools.partial(jax.jit, static_argnames=("order",))
def warp_displacement(
    image: jnp.ndarray,
    displacement: jnp.ndarray,
    *,
    order: int = 1,
    cval: float = 0.0,
) -> jnp.ndarray:
    """Warp an image by a dense pull-back field: ``out(x) = image(x + d(x))``.

    Args:
        image: ``[*S, C]`` image or ``[*S]`` label map.
        displacement: ``[*T, ndim]`` voxels (usually ``T = S``).
        order: 1 linear, 0 nearest.
        cval: value where ``x + d(x)`` leaves the image.

    Returns:
        ``[*T, C]`` (or ``[*T]``).
    """
    ndim = displacement.shape[-1]
    if displacement.ndim != ndim + 1:
        raise ValueError(
            f"displacement: expected [*S, ndim] with ndim spatial axes, got shape "
            f"{tuple(displacement.shape)}"
        )
    grid = identity_grid(tuple(displacement.shape[:-1]))
    return sample(image, grid + displacement, order=order, cval=cval)


def affine_to_displacement(matrix: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Pull-back field of ``warp_affine(·, matrix)``: ``d(x) = A^{-1} x - x``.

    Args:
        matrix: ``[ndim+1, ndim+1]`` forward matrix.
        shape: spatial shape ``S`` (static).

    Returns:
        ``[*S, ndim]`` float32 such that ``warp_displacement(image, d)`` equals
        ``warp_affine(image, matrix)``.
    """
    return _affine_to_displacement(matrix, tuple(int(n) for n in shape))


@functools.partial(jax.jit, static_argnums=1)
def _affine_to_displacement(matrix, shape):
    ndim = _check_matrix(matrix)
    if len(shape) != ndim:
        raise ValueError(
            f"shape: expected {ndim} axes for a {ndim}D matrix, got {shape}"
        )
    grid = identity_grid(shape)
    return _apply(_inverse(matrix), grid) - grid


@jax.jit
def compose_displacements(first: jnp.ndarray, second: jnp.ndarray) -> jnp.ndarray:
    """One field for warping by ``first`` and then by ``second``.

    ``d(x) = second(x) + first(x + second(x))``, with ``first`` sampled linearly
    and extended beyond its edges by its edge values, so that
    ``warp_displacement(warp_displacement(img, first), second)`` equals
    ``warp_displacement(img, d)`` up to interpolation (exactly for images that
    are affine functions of position, away from the borders).

    Args:
        first: ``[*S, ndim]`` field applied first.
        second: ``[*T, ndim]`` field applied second.

    Returns:
        ``[*T, ndim]``.
    """
    ndim = first.shape[-1]
    if first.ndim != ndim + 1 or second.ndim != ndim + 1 or second.shape[-1] != ndim:
        raise ValueError(
            f"first, second: expected fields [*S, ndim] of the same ndim, got shapes "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    coords = identity_grid(tuple(second.shape[:-1])) + second
    return second + _map_channels(first, coords, 1, "nearest")


def _determinant(matrix: jnp.ndarray) -> jnp.ndarray:
    """Determinant of ``[..., n, n]`` for n = 2, 3, by cofactors (exact, smooth)."""
    m = matrix
    if m.shape[-1] == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    return (
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


@jax.jit
def jacobian_determinant(displacement: jnp.ndarray) -> jnp.ndarray:
    """Jacobian determinant of the map ``x -> x + d(x)``.

    Derivatives as ``numpy.gradient``: central differences inside, one-sided at
    the borders. Values <= 0 mark folding.

    Args:
        displacement: ``[*S, ndim]`` voxels, ndim 2 or 3 (each axis >= 2 long).

    Returns:
        ``[*S]``, ``det(I + grad d)``.
    """
    ndim = displacement.shape[-1]
    if displacement.ndim != ndim + 1 or ndim not in (2, 3):
        raise ValueError(
            f"displacement: expected [*S, ndim] with ndim 2 or 3, got shape "
            f"{tuple(displacement.shape)}"
        )
    # jacobian[..., i, j] = d(d_i) / d(x_j)
    gradients = jnp.gradient(displacement, axis=tuple(range(ndim)))
    identity = jnp.eye(ndim, dtype=displacement.dtype)
    jacobian = jnp.stack(gradients, axis=-1) + identity
    return _determinant(jacobian)


def _gaussian_kernel(sigma: float, truncate: float) -> tuple[jnp.ndarray, int]:
    """Sampled Gaussian of std ``sigma``, unit L2 norm, radius ceil(truncate sigma)."""
    radius = math.ceil(truncate * sigma)
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / max(sigma, 1e-12)) ** 2)
    return kernel / jnp.sqrt(jnp.sum(kernel**2)), radius


def _convolve_valid(values: jnp.ndarray, kernel: jnp.ndarray, axis: int) -> jnp.ndarray:
    """'valid' correlation of ``values`` with a 1-D ``kernel`` along ``axis``.

    Written as a product with a banded ``[n - K + 1, n]`` matrix: one matmul per
    axis, faster than a batched 1-D convolution on CPU and GPU at these sizes.
    """
    size, width = values.shape[axis], kernel.shape[0]
    offset = jnp.arange(size)[None, :] - jnp.arange(size - width + 1)[:, None]
    inside = (offset >= 0) & (offset < width)
    band = jnp.where(inside, kernel[jnp.clip(offset, 0, width - 1)], 0.0)
    return jnp.moveaxis(jnp.tensordot(band, values, axes=([1], [axis])), 0, axis)


def smooth_random_displacement(
    key: jax.Array, shape: tuple[int, ...], *, sigma: float, magnitude: float
) -> jnp.ndarray:
    """Smooth random displacement field for elastic deformation.

    Gaussian white noise per component, smoothed by a separable Gaussian of std
    ``sigma`` voxels (truncated at 3 sigma) and scaled so that every voxel of every
    component has std ``magnitude`` voxels. The noise is drawn on a grid padded by
    the kernel radius and convolved without padding, so the field is stationary
    up to the borders; its correlation between voxels h apart along an axis is
    ``exp(-h^2 / (4 sigma^2))``.

    Args:
        key: PRNG key.
        shape: spatial shape ``S`` (static), ndim 2 or 3.
        sigma: smoothing std in voxels (static Python float, >= 0; 0 gives white
            noise).
        magnitude: std of each component in voxels (may be traced).

    Returns:
        ``[*S, ndim]`` float32.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape: expected 2 or 3 spatial axes, got {shape}")
    if not float(sigma) >= 0:
        raise ValueError(f"sigma: expected a static value >= 0, got {sigma!r}")
    return _smooth_random_displacement(key, shape, float(sigma), magnitude)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _smooth_random_displacement(key, shape, sigma, magnitude):
    ndim = len(shape)
    kernel, radius = _gaussian_kernel(sigma, truncate=3.0)
    padded = tuple(n + 2 * radius for n in shape)
    field = jax.random.normal(key, (*padded, ndim), dtype=jnp.float32)
    for axis in range(ndim):
        field = _convolve_valid(field, kernel, axis)
    return field * jnp.asarray(magnitude, jnp.float32)


def invert_displacement_at(
    displacement: jnp.ndarray, points: jnp.ndarray, iterations: int = 10
) -> jnp.ndarray:
    """Where ``warp_displacement(·, displacement)`` moves each of ``points``.

    The warp reads ``in(x + d(x))`` at output voxel ``x``, so input point ``p``
    lands at the ``y`` with ``y + d(y) = p``; solved by the fixed-point iteration
    ``y <- p - d(y)`` from ``y = p``, with ``d`` sampled linearly and extended by
    its edge values. It converges when the field's spatial derivatives are below
    1, which holds for smooth, folding-free fields.

    Args:
        displacement: ``[*S, ndim]`` pull-back field.
        points: ``[K, ndim]`` voxel coordinates in the input.
        iterations: fixed-point steps (static).

    Returns:
        ``[K, ndim]`` voxel coordinates in the output.
    """
    upper = jnp.asarray(displacement.shape[:-1], jnp.float32) - 1

    def step(_, y):
        return points - sample(displacement, jnp.clip(y, 0.0, upper))

    return jax.lax.fori_loop(0, iterations, step, points)
