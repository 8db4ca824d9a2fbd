"""Registration metrics, Learn2Reg's set: overlap of warped label maps, target
registration error of landmarks, the regularity of the deformation, and HD95.

Conventions: a registration result is a pull-back displacement ``d [B, *S, ndim]``
in voxels, ``warped(x) = moving(x + d(x))`` (``medjax.ops.displacement``), so a
fixed-image point ``p`` corresponds to the moving-image point ``p + d(p)``.

- ``label_dice``: Dice of the fixed labels against the moving labels warped by
  ``d`` (nearest neighbour), per structure, NaN where the fixed image lacks the
  structure (``medjax.metrics.segmentation.dice_per_class``'s convention).
- ``target_registration_error``: ``|p + d(p) - q|`` for corresponding landmarks
  ``p`` (fixed) and ``q`` (moving), ``d`` interpolated linearly at ``p``, in mm
  with ``spacing``.
- ``folding_fraction``: the share of voxels whose Jacobian determinant of
  ``x -> x + d(x)`` is <= 0 (report it as a percentage).
- ``std_log_jacobian``: the standard deviation of ``log det J`` over the voxels,
  the determinant clipped to [1e-9, 1e9] first (as Learn2Reg does): 0 for any
  volume-preserving or affine map.
- ``label_hd95``: the 95th-percentile Hausdorff distance per structure (host
  side, ``medjax.metrics.segmentation.hausdorff_distance_95``).

Device-side functions are batched and take a validity ``mask [B]``; padded
pairs give 0.
"""

import jax
import jax.numpy as jnp
import numpy as np

from medjax.metrics.segmentation import dice_per_class, hausdorff_distance_95
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial


def warp_labels(labels: jnp.ndarray, displacement: jnp.ndarray) -> jnp.ndarray:
    """Moving label maps ``[B, *S]`` warped by ``displacement [B, *S, ndim]``
    (nearest neighbour; outside the image is background 0)."""
    return jax.vmap(lambda l, d: dense_fields.warp_displacement(l, d, order=0))(
        labels, displacement
    )


def label_dice(
    fixed_labels: jnp.ndarray,
    moving_labels: jnp.ndarray,
    displacement: jnp.ndarray,
    num_classes: int,
    *,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Dice per structure of the warped moving labels against the fixed ones.

    Args:
        fixed_labels, moving_labels: ``[B, *S]`` integer label maps.
        displacement: ``[B, *S, ndim]`` pull-back field (voxels).
        num_classes: label values 0..num_classes-1 (static); 0 is background.
        mask: ``[B]`` bool.

    Returns:
        ``[B, num_classes]`` float32, background included (slice ``[:, 1:]``);
        NaN where the fixed labels lack the class.
    """
    warped = warp_labels(moving_labels, displacement)
    return dice_per_class(warped, fixed_labels, num_classes, mask=mask)


def _sample_field(displacement: jnp.ndarray, points: jnp.ndarray) -> jnp.ndarray:
    """``d`` ``[*S, ndim]`` at ``points [K, ndim]``, linear, edges extended."""
    upper = jnp.asarray(displacement.shape[:-1], jnp.float32) - 1
    clamped = jnp.clip(points, 0.0, upper)
    return spatial.sample(displacement, clamped)


def target_registration_error(
    displacement: jnp.ndarray,
    fixed_points: jnp.ndarray,
    moving_points: jnp.ndarray,
    *,
    valid: jnp.ndarray | None = None,
    spacing=None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Distance between where the registration sends each fixed landmark and
    where it truly is in the moving image.

    Args:
        displacement: ``[B, *S, ndim]`` pull-back field (voxels).
        fixed_points, moving_points: ``[B, K, ndim]`` corresponding voxel
            coordinates.
        valid: ``[B, K]`` bool, landmarks present in both images.
        spacing: voxel size (one value or one per axis), for mm; None: voxels.
        mask: ``[B]`` bool.

    Returns:
        ``[B, K]`` float32 errors; NaN for invalid landmarks, 0 for padded pairs.
    """
    mapped = fixed_points + jax.vmap(_sample_field)(displacement, fixed_points)
    scale = 1.0 if spacing is None else jnp.asarray(spacing, jnp.float32)
    errors = jnp.linalg.norm((mapped - moving_points) * scale, axis=-1)
    if valid is not None:
        errors = jnp.where(valid, errors, jnp.nan)
    return errors if mask is None else jnp.where(mask[:, None], errors, 0.0)


def _determinants(displacement: jnp.ndarray) -> jnp.ndarray:
    return jax.vmap(dense_fields.jacobian_determinant)(displacement)


def folding_fraction(
    displacement: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Share of voxels with ``det J <= 0`` per pair, ``[B]`` in [0, 1]."""
    determinants = _determinants(displacement)
    axes = tuple(range(1, determinants.ndim))
    share = jnp.mean((determinants <= 0).astype(jnp.float32), axis=axes)
    return share if mask is None else jnp.where(mask, share, 0.0)


def std_log_jacobian(
    displacement: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Standard deviation of ``log det J`` per pair, ``[B]``; the determinant is
    clipped to [1e-9, 1e9] first, so folded voxels count as very compressed."""
    determinants = jnp.clip(_determinants(displacement), 1e-9, 1e9)
    axes = tuple(range(1, determinants.ndim))
    spread = jnp.std(jnp.log(determinants), axis=axes)
    return spread if mask is None else jnp.where(mask, spread, 0.0)


def label_hd95(
    fixed_labels: np.ndarray,
    warped_labels: np.ndarray,
    classes,
    spacing=None,
) -> np.ndarray:
    """HD95 per structure of one pair (host side).

    Args:
        fixed_labels, warped_labels: ``[*S]`` integer label maps.
        classes: the label values to measure.
        spacing: voxel size, for mm.

    Returns:
        ``[len(classes)]`` float64; NaN where both lack the class, inf where one
        does.
    """
    fixed_labels, warped_labels = np.asarray(fixed_labels), np.asarray(warped_labels)
    return np.array([
        hausdorff_distance_95(warped_labels == c, fixed_labels == c, spacing)
        for c in classes
    ])
