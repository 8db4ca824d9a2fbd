"""The geometric part of augmentation: one random transform per example, and every
spatial field moved by it according to its role.

A :class:`Transform` is a forward affine ``A`` (flip, rotation, translation, zoom
and shear about the image centre, :func:`medjax.ops.spatial.affine_matrix`),
optionally followed by a smooth elastic pull-back displacement ``d``. Output
voxel ``x`` reads the input at ``A^-1 (x + d(x))``; that one map moves, by role
(``medjax.data.schema``):

- ``image``: linear interpolation; what enters from outside the field of view is
  each channel's minimum, so air stays air;
- ``label_map``, ``instance_map``: nearest neighbour, 0 outside;
- ``vector_field`` (a pull-back displacement ``u`` in voxels): resampled AND
  re-expressed in the moved frame. A voxel ``p`` of the input pairs with
  ``p + u(p)``; both points move forward, so the moved field is
  ``u'(x) = forward(q + u(q)) - x`` with ``q`` the input point read at ``x``.
  For an affine this is ``L u(q)`` (``L`` the linear part: the field rotates as
  a vector, and a translation leaves it unchanged);
- ``points``: moved forward; points that leave the image become invalid;
  invalid rows are returned as they were;
- ``boxes``: through their ``2 ** ndim`` corners (:mod:`medjax.ops.boxes`),
  clipped to the image; a box moved wholly outside becomes invalid.

A field with a ``time`` axis (``[T, *S, ...]``: cine frames, slice sequences) is
moved with the example's one transform in every frame.

Forward map of points (``q = A p``, then the ``y`` with ``y + d(y) = q``, by the
fixed-point iteration ``y <- q - d(y)``, 5 steps from ``y = q``, ``d`` sampled
linearly; it converges because a smooth field has a small gradient).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from medjax.augment import draws
from medjax.data import schema as roles
from medjax.ops import boxes as box_ops
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial

# Fixed-point iterations that invert the elastic displacement at the points.
_ELASTIC_POINT_ITERATIONS = 5


class Transform(NamedTuple):
    """One example's geometric transform.

    Attributes:
        matrix: ``[ndim+1, ndim+1]`` forward affine.
        displacement: ``[*S, ndim]`` elastic pull-back applied after the affine,
            or None when elastic deformation is off.
        coords: ``[*S, ndim]``: the input point each output voxel reads,
            ``A^-1 (x + d(x))``.
        moved: scalar bool, whether any part applies to this example (else every
            field is returned exactly as it was).
    """

    matrix: jnp.ndarray
    displacement: jnp.ndarray | None
    coords: jnp.ndarray
    moved: jnp.ndarray


def draw(settings, part_keys: dict, shape: tuple[int, ...]) -> Transform:
    """Draws one example's transform.

    Args:
        settings: the :class:`medjax.augment.Augmentation` (its probabilities
            and ranges).
        part_keys: ``{part: key}``, one key per part of the augmentation.
        shape: spatial shape ``S`` (static), 2 or 3 axes.

    Returns:
        The transform; parts whose probability is 0 are not traced.
    """
    ndim = len(shape)
    angles = 1 if ndim == 2 else 3
    applied = []
    kwargs = {}
    if settings.flip_probability > 0.0:
        axes = range(ndim) if settings.flip_axes is None else settings.flip_axes
        allowed = jnp.asarray([axis in axes for axis in range(ndim)])
        coins = jax.random.bernoulli(
            part_keys["flip"], settings.flip_probability, (ndim,)
        )
        flips = allowed & coins
        applied.append(flips.any())
        kwargs["flip"] = flips.astype(jnp.float32)
    if settings.rotation_probability > 0.0:
        coin, value_key = draws.coin(
            part_keys["rotation"], settings.rotation_probability
        )
        limit = math.radians(settings.rotation_degrees)
        rotation = jax.random.uniform(value_key, (angles,), minval=-limit, maxval=limit)
        rotation = jnp.where(coin, rotation, 0.0)
        applied.append(coin)
        kwargs["rotation"] = rotation[0] if ndim == 2 else rotation
    if settings.translation_probability > 0.0:
        coin, value_key = draws.coin(
            part_keys["translation"], settings.translation_probability
        )
        limit = settings.translation_fraction
        fraction = jax.random.uniform(value_key, (ndim,), minval=-limit, maxval=limit)
        applied.append(coin)
        kwargs["translation"] = jnp.where(
            coin, fraction * jnp.asarray(shape, jnp.float32), 0.0
        )
    if settings.zoom_probability > 0.0:
        coin, value_key = draws.coin(part_keys["zoom"], settings.zoom_probability)
        low, high = (math.log(z) for z in settings.zoom_range)
        zoom = jnp.exp(jax.random.uniform(value_key, (), minval=low, maxval=high))
        applied.append(coin)
        kwargs["zoom"] = jnp.full((ndim,), jnp.where(coin, zoom, 1.0))
    if settings.shear_probability > 0.0:
        coin, value_key = draws.coin(part_keys["shear"], settings.shear_probability)
        limit = settings.shear_max
        shear = jax.random.uniform(value_key, (angles,), minval=-limit, maxval=limit)
        shear = jnp.where(coin, shear, 0.0)
        applied.append(coin)
        kwargs["shear"] = shear[0] if ndim == 2 else shear
    matrix = spatial.affine_matrix(ndim, center=spatial.image_center(shape), **kwargs)
    inverse = jnp.linalg.inv(matrix)

    grid = spatial.identity_grid(shape)
    displacement = None
    if settings.elastic_probability > 0.0:
        coin, value_key = draws.coin(part_keys["elastic"], settings.elastic_probability)
        displacement = dense_fields.smooth_random_displacement(
            value_key,
            shape,
            sigma=settings.elastic_sigma,
            magnitude=settings.elastic_magnitude,
        )
        displacement = jnp.where(coin, displacement, 0.0)
        applied.append(coin)
        grid = grid + displacement
    # Output voxel x reads the input at A^-1 (x + d(x)): one map for all fields.
    coords = spatial.transform_points(inverse, grid.reshape(-1, ndim)).reshape(
        grid.shape
    )
    return Transform(matrix, displacement, coords, jnp.stack(applied).any())


def forward_points(transform: Transform, points: jnp.ndarray) -> jnp.ndarray:
    """Where input points ``[K, ndim]`` land in the output, ``[K, ndim]`` float32."""
    target = spatial.transform_points(transform.matrix, points.astype(jnp.float32))
    if transform.displacement is not None:
        target = dense_fields.invert_displacement_at(
            transform.displacement, target, _ELASTIC_POINT_ITERATIONS
        )
    return target


def _resample_channels(image, coords, background):
    """``image [*S, C]`` read at ``coords``, channel ``c`` padded with
    ``background[c]``."""
    return jax.vmap(
        lambda channel, cval: spatial.sample(channel, coords, order=1, cval=cval),
        in_axes=(-1, 0),
        out_axes=-1,
    )(image, background)


def move_image(transform: Transform, image: jnp.ndarray, *, time: bool) -> jnp.ndarray:
    """``image [*S, C]`` (``[T, *S, C]`` with ``time``), linearly resampled."""
    # Per-channel background (over every frame of a sequence): what enters from
    # outside the field of view.
    background = image.min(axis=tuple(range(image.ndim - 1)))
    if time:
        warped = jax.vmap(_resample_channels, in_axes=(0, None, None))(
            image, transform.coords, background
        )
    else:
        warped = _resample_channels(image, transform.coords, background)
    return jnp.where(transform.moved, warped.astype(image.dtype), image)


def move_label_map(
    transform: Transform, labels: jnp.ndarray, *, time: bool
) -> jnp.ndarray:
    """Integer or bool ``labels [*S]`` (``[T, *S]`` with ``time``), by nearest
    neighbour, 0 outside."""

    def one(frame):
        return spatial.sample(
            frame.astype(jnp.float32), transform.coords, order=0, cval=0.0
        )

    warped = jax.vmap(one)(labels) if time else one(labels)
    return jnp.where(transform.moved, warped.astype(labels.dtype), labels)


def move_vector_field(transform: Transform, field: jnp.ndarray) -> jnp.ndarray:
    """A pull-back displacement ``[*S, ndim]`` (voxels), resampled and moved as a
    vector: ``u'(x) = forward(q + u(q)) - x`` (see the module docstring)."""
    ndim = field.shape[-1]
    read = _resample_channels(
        field.astype(jnp.float32), transform.coords, jnp.zeros(ndim, jnp.float32)
    )
    linear = transform.matrix[:ndim, :ndim]
    rotated = read @ linear.T  # L u(q): exact for an affine
    if transform.displacement is not None:
        # x + d(x) = A q, so A (q + u(q)) = x + d(x) + L u(q); then undo d.
        grid = spatial.identity_grid(field.shape[:-1])
        tips = (grid + transform.displacement + rotated).reshape(-1, ndim)
        landed = dense_fields.invert_displacement_at(
            transform.displacement, tips, _ELASTIC_POINT_ITERATIONS
        )
        rotated = landed.reshape(field.shape) - grid
    return jnp.where(transform.moved, rotated.astype(field.dtype), field)


def move_points(
    transform: Transform, points: jnp.ndarray, valid: jnp.ndarray, shape
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Points ``[K, ndim]`` moved forward, and their validity ``[K]``: False for
    points outside ``[0, size - 1]``; invalid rows keep their values."""
    target = forward_points(transform, points)
    upper = jnp.asarray(shape, jnp.float32) - 1.0
    inside = jnp.all((target >= 0.0) & (target <= upper), axis=-1)
    # Invalid rows are padding: keep them as they were.
    moved = transform.moved & valid.astype(bool)
    target = jnp.where(moved[:, None], target.astype(points.dtype), points)
    keep = jnp.where(transform.moved, valid & inside, valid).astype(valid.dtype)
    return target, keep


def move_boxes(
    transform: Transform, boxes: jnp.ndarray, valid: jnp.ndarray, shape
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Boxes ``[N, 2 * ndim]`` moved through their corners and clipped to the
    image, and their validity ``[N]``: False for boxes moved wholly outside;
    invalid rows keep their values."""
    moved_boxes = box_ops.move(boxes, lambda p: forward_points(transform, p))
    clipped, overlaps = box_ops.clip_to_image(moved_boxes, tuple(shape))
    moved = transform.moved & valid.astype(bool)
    out = jnp.where(moved[:, None], clipped.astype(boxes.dtype), boxes)
    keep = jnp.where(transform.moved, valid & overlaps, valid).astype(valid.dtype)
    return out, keep


def move_fields(
    transform: Transform, example: dict, schema: roles.Schema, shape
) -> dict:
    """Every spatial field of ``example`` (no batch axis) named in ``schema``,
    moved by ``transform`` according to its role; returns only those fields."""
    out = {}
    for key, role in schema:
        if role.kind == roles.IMAGE:
            out[key] = move_image(transform, example[key], time=role.time)
        elif role.kind in (roles.LABEL_MAP, roles.INSTANCE_MAP):
            out[key] = move_label_map(transform, example[key], time=role.time)
        elif role.kind == roles.VECTOR_FIELD:
            out[key] = move_vector_field(transform, example[key])
        elif role.kind == roles.POINTS:
            out[key], out[role.valid] = move_points(
                transform, example[key], example[role.valid], shape
            )
        elif role.kind == roles.BOXES:
            out[key], out[role.valid] = move_boxes(
                transform, example[key], example[role.valid], shape
            )
    return out
