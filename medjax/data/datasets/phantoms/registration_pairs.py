"""Registration pairs made on the fly from any image: a fixed image, a moving
image deformed by a known random transform, and that transform.

The transform is a random affine (rotation, translation, zoom and shear about the
image centre) followed by a smooth elastic displacement. Everything is pure JAX:
``registration_pair`` jits and vmaps, so pairs can be drawn inside a training step
from any ``medjax_phantoms`` config (2D slices, 3D volumes, cine frames).
"""

import math

import jax
import jax.numpy as jnp

from medjax.ops import displacement as dense_fields
from medjax.ops import spatial


def registration_pair(
    key: jax.Array,
    image: jnp.ndarray,
    *,
    moving_image: jnp.ndarray | None = None,
    masks: dict[str, jnp.ndarray] | None = None,
    points: jnp.ndarray | None = None,
    max_rotation_degrees: float = 10.0,
    max_translation: float = 0.05,
    zoom_range: tuple[float, float] = (0.9, 1.1),
    max_shear: float = 0.05,
    elastic_sigma: float = 4.0,
    elastic_magnitude: float = 1.0,
) -> dict[str, jnp.ndarray]:
    """A fixed/moving pair with its ground-truth transform.

    Args:
        key: PRNG key.
        image: ``[*S, C]`` fixed image (ndim 2 or 3, no batch axis).
        moving_image: ``[*S, C']`` the same anatomy in another contrast (the
            phantoms' MR twin ``mr_image``), warped to make the moving image of a
            multimodal pair (default: ``image``, a monomodal pair).
        masks: ``{name: [*S]}`` label maps of the fixed image, moved nearest.
        points: ``[K, ndim]`` voxel coordinates in the fixed image.
        max_rotation_degrees: rotations uniform in +- this (3D: about each axis).
        max_translation: translations uniform in +- this fraction of each axis.
        zoom_range: isotropic zoom factor range.
        max_shear: shear factors uniform in +- this.
        elastic_sigma: smoothness of the elastic field, voxels (static).
        elastic_magnitude: std of the elastic field, voxels (0 for affine only).

    Returns:
        ``fixed``, ``moving`` ``[*S, C]``; ``fixed_<name>``/``moving_<name>`` for
        each mask; ``affine`` the forward affine ``[ndim+1, ndim+1]`` (where fixed
        content lands before the elastic part); ``displacement [*S, ndim]`` the
        total pull-back field, ``moving(x) = fixed(x + displacement(x))``, i.e. for
        each moving voxel where its content sits in the fixed image (a network that
        warps the moving image onto the fixed one learns its inverse); with
        ``points``, ``fixed_points`` and ``moving_points [K, ndim]`` (where each
        fixed point went in the moving image).
    """
    shape = image.shape[:-1]
    ndim = len(shape)
    keys = jax.random.split(key, 5)
    n_angles = 1 if ndim == 2 else 3
    n_shears = 1 if ndim == 2 else 3
    angles = jax.random.uniform(keys[0], (n_angles,), minval=-1, maxval=1)
    angles = angles * math.radians(max_rotation_degrees)
    size = jnp.asarray(shape, jnp.float32)
    translation = jax.random.uniform(keys[1], (ndim,), minval=-1, maxval=1)
    zoom = jax.random.uniform(keys[2], (), minval=zoom_range[0], maxval=zoom_range[1])
    shear = jax.random.uniform(keys[3], (n_shears,), minval=-1, maxval=1) * max_shear
    affine = spatial.affine_matrix(
        ndim,
        rotation=angles[0] if ndim == 2 else angles,
        translation=translation * max_translation * size,
        zoom=jnp.full((ndim,), zoom),
        shear=shear[0] if ndim == 2 else shear,
        center=spatial.image_center(shape),
    )
    elastic = dense_fields.smooth_random_displacement(
        keys[4], shape, sigma=elastic_sigma, magnitude=elastic_magnitude
    )
    # Affine first, then the elastic deformation of the affinely moved image.
    displacement = dense_fields.compose_displacements(
        dense_fields.affine_to_displacement(affine, shape), elastic
    )
    source = image if moving_image is None else moving_image
    background = jnp.min(source)
    pair = {
        "fixed": image,
        "moving": dense_fields.warp_displacement(source, displacement, cval=background),
        "affine": affine,
        "displacement": displacement,
    }
    for name, mask in (masks or {}).items():
        pair[f"fixed_{name}"] = mask
        pair[f"moving_{name}"] = dense_fields.warp_displacement(mask, displacement, order=0)
    if points is not None:
        pair["fixed_points"] = points
        pair["moving_points"] = dense_fields.invert_displacement_at(displacement, points, 20)
    return pair
