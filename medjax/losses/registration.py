"""Image similarity measures and deformation regularisers for registration.

Every function takes a batch of image pairs ``[B, *S, C]`` (2D or 3D, channels
last) and returns one value per pair ``[B]``; an optional ``roi [B, *S]``
weights the voxels that count (a body mask, the overlap of the warped moving
image), and ``mask [B]`` zeroes padded pairs, as every medjax loss does.

Similarities (higher is better, except ``sum_of_squared_differences``):

- ``sum_of_squared_differences``: the mean squared intensity difference
  (monomodal, same intensity scale).
- ``normalized_cross_correlation``: global Pearson correlation, in [-1, 1];
  invariant to a linear intensity change.
- ``local_normalized_cross_correlation``: VoxelMorph's windowed NCC, the mean
  over voxels of the squared correlation in a ``window``-wide box around each
  (boxes cut by the image's edge use the voxels inside, not VoxelMorph's zero
  padding); robust to slowly varying bias fields.
- ``mutual_information``: Mattes et al. (2003) mutual information in nats,
  from a joint histogram with cubic B-spline Parzen windows, so it is
  differentiable in the moving image's intensities; invariant to a monotone
  intensity remap up to binning, so it works across modalities (CT and MR).

``similarity_loss`` turns any of them into a loss to minimise by name
(``SIMILARITIES``). Regularisers of a displacement ``[B, *S, ndim]``:
``diffusion_penalty`` (squared first differences, VoxelMorph's ``Grad('l2')``)
and ``bending_energy`` (squared second differences, the thin-plate energy).

Pure JAX; imports no medjax code.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

_EPS = 1e-5


def _spatial_axes(images: jnp.ndarray) -> tuple[int, ...]:
    return tuple(range(1, images.ndim - 1))


def _weights(images: jnp.ndarray, roi: jnp.ndarray | None) -> jnp.ndarray:
    """Voxel weights ``[B, *S, 1]`` (all ones without a roi)."""
    if roi is None:
        return jnp.ones(images.shape[:-1] + (1,), jnp.float32)
    return roi.astype(jnp.float32)[..., None]


def _zero_padded(values: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    return values if mask is None else jnp.where(mask, values, 0.0)


def sum_of_squared_differences(
    fixed: jnp.ndarray,
    warped: jnp.ndarray,
    *,
    roi: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Mean squared difference over the roi's voxels and the channels.

    Args:
        fixed, warped: ``[B, *S, C]``.
        roi: ``[B, *S]`` voxel weights (bool or float).
        mask: ``[B]`` bool, False for padded pairs.

    Returns:
        ``[B]`` float32, lower is better; 0 where ``mask`` is False.
    """
    weights = _weights(fixed, roi)
    error = jnp.square(fixed.astype(jnp.float32) - warped.astype(jnp.float32))
    axes = tuple(range(1, fixed.ndim))
    total = jnp.sum(weights, axes) * fixed.shape[-1]
    return _zero_padded(jnp.sum(error * weights, axes) / jnp.maximum(total, _EPS), mask)


def normalized_cross_correlation(
    fixed: jnp.ndarray,
    warped: jnp.ndarray,
    *,
    roi: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Pearson correlation of the two images over the roi (channels pooled).

    Returns:
        ``[B]`` in [-1, 1], higher is better; 0 for a constant image.
    """
    weights = _weights(fixed, roi)
    axes = tuple(range(1, fixed.ndim))
    total = jnp.maximum(jnp.sum(weights, axes, keepdims=True) * fixed.shape[-1], _EPS)
    f, m = fixed.astype(jnp.float32), warped.astype(jnp.float32)
    f = f - jnp.sum(f * weights, axes, keepdims=True) / total
    m = m - jnp.sum(m * weights, axes, keepdims=True) / total
    cross = jnp.sum(f * m * weights, axes)
    variance = jnp.sum(f * f * weights, axes) * jnp.sum(m * m * weights, axes)
    return _zero_padded(cross / jnp.sqrt(variance + _EPS), mask)


def _box_sum(values: jnp.ndarray, window: int) -> jnp.ndarray:
    """Sum over a ``window``-wide box centred on each voxel of ``[B, *S, C]``
    (zero padding outside the image)."""
    ndim = values.ndim - 2
    dims = (1,) + (window,) * ndim + (1,)
    pad = [(0, 0)] + [(window // 2, (window - 1) // 2)] * ndim + [(0, 0)]
    return jax.lax.reduce_window(values, 0.0, jax.lax.add, dims, (1,) * values.ndim, pad)


def _box_counts(shape: tuple[int, ...], window: int) -> jnp.ndarray:
    """``[1, *S, 1]``: how many voxels of each voxel's box lie inside the image,
    a product of per-axis counts (small constants, not a box sum of ones that XLA
    would fold at compile time)."""
    counts = 1.0
    for axis, size in enumerate(shape):
        inside = np.convolve(np.ones(size), np.ones(window), mode="same")
        if window % 2 == 0:  # _box_sum's window reaches one voxel further back
            inside = np.convolve(np.ones(size), np.ones(window), mode="full")[
                window // 2: window // 2 + size]
        profile = inside.reshape((1,) + tuple(size if a == axis else 1
                                              for a in range(len(shape))) + (1,))
        counts = counts * jnp.asarray(profile, jnp.float32)
    return counts


def local_normalized_cross_correlation(
    fixed: jnp.ndarray,
    warped: jnp.ndarray,
    *,
    window: int = 9,
    roi: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """VoxelMorph's local NCC: the squared correlation in a box around each
    voxel, averaged over the roi's voxels and the channels.

    Args:
        fixed, warped: ``[B, *S, C]``.
        window: the box's width in voxels (9 in VoxelMorph).
        roi: ``[B, *S]`` weights of the voxels averaged.
        mask: ``[B]`` bool.

    Returns:
        ``[B]`` in [0, 1], higher is better.
    """
    f, m = fixed.astype(jnp.float32), warped.astype(jnp.float32)
    # Each box's own voxel count: near the border a box is cut by the image's
    # edge, and dividing by the full window size (as VoxelMorph does) would
    # count the zero padding as intensities, so that a constant image
    # correlates with any image along a band at the border.
    size = _box_counts(fixed.shape[1:-1], window)
    f_sum, m_sum = _box_sum(f, window), _box_sum(m, window)
    ff, mm, fm = _box_sum(f * f, window), _box_sum(m * m, window), _box_sum(f * m, window)
    cross = fm - f_sum * m_sum / size
    f_var = ff - f_sum**2 / size
    m_var = mm - m_sum**2 / size
    local = cross**2 / (f_var * m_var + _EPS)
    weights = _weights(fixed, roi)
    axes = tuple(range(1, fixed.ndim))
    total = jnp.maximum(jnp.sum(weights, axes) * fixed.shape[-1], _EPS)
    return _zero_padded(jnp.sum(local * weights, axes) / total, mask)


def _cubic_bspline(u: jnp.ndarray) -> jnp.ndarray:
    """The cubic B-spline kernel (support [-2, 2], sums to 1 over integer shifts)."""
    a = jnp.abs(u)
    inner = (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0
    outer = jnp.where(a < 2.0, (2.0 - a) ** 3 / 6.0, 0.0)
    return jnp.where(a < 1.0, inner, outer)


def _parzen_weights(values: jnp.ndarray, weights: jnp.ndarray, num_bins: int):
    """``[N, num_bins]`` cubic B-spline Parzen weights of intensities ``[N]``
    rescaled into the bins by their (weighted) range; the range is a constant
    of the gradient, as in Mattes' method."""
    inside = weights > 0
    low = jax.lax.stop_gradient(jnp.min(jnp.where(inside, values, jnp.inf)))
    high = jax.lax.stop_gradient(jnp.max(jnp.where(inside, values, -jnp.inf)))
    # Two bins of padding each side hold the kernel's support.
    scaled = 2.0 + (values - low) / jnp.maximum(high - low, _EPS) * (num_bins - 5)
    centres = jnp.arange(num_bins, dtype=jnp.float32)
    return _cubic_bspline(centres[None, :] - scaled[:, None])


def _mutual_information_one(fixed, warped, weights, num_bins):
    """MI of one pair of flattened intensity vectors ``[N]`` with weights ``[N]``."""
    w_fixed = _parzen_weights(fixed, weights, num_bins)
    w_moving = _parzen_weights(warped, weights, num_bins)
    joint = (w_fixed * weights[:, None]).T @ w_moving
    joint = joint / jnp.maximum(jnp.sum(joint), _EPS)
    p_fixed = jnp.sum(joint, axis=1, keepdims=True)
    p_moving = jnp.sum(joint, axis=0, keepdims=True)
    ratio = joint / jnp.maximum(p_fixed * p_moving, 1e-12)
    terms = jnp.where(joint > 1e-12, joint * jnp.log(jnp.maximum(ratio, 1e-12)), 0.0)
    return jnp.sum(terms)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def mutual_information(
    fixed: jnp.ndarray,
    warped: jnp.ndarray,
    *,
    num_bins: int = 32,
    roi: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Mattes mutual information with cubic B-spline Parzen windows.

    Each image's intensities over the roi are rescaled into ``num_bins`` bins
    by their own minimum and maximum; the joint histogram is the roi-weighted
    sum of the outer products of the two images' Parzen weights. Channels are
    averaged as intensities first (pass one channel for multi-channel data).

    Args:
        fixed, warped: ``[B, *S, C]``.
        num_bins: histogram bins per image (static; 32 to 64 is usual).
        roi: ``[B, *S]`` voxel weights.
        mask: ``[B]`` bool.

    Returns:
        ``[B]`` float32 in nats, higher is better; 0 for independent images.
    """
    batch = fixed.shape[0]
    f = jnp.mean(fixed.astype(jnp.float32), axis=-1).reshape(batch, -1)
    m = jnp.mean(warped.astype(jnp.float32), axis=-1).reshape(batch, -1)
    weights = _weights(fixed, roi)[..., 0].reshape(batch, -1)
    values = jax.vmap(lambda a, b, w: _mutual_information_one(a, b, w, num_bins))(
        f, m, weights
    )
    return _zero_padded(values, mask)


#: Similarity measures by name: (function, True when higher is better).
SIMILARITIES = {
    "ssd": (sum_of_squared_differences, False),
    "ncc": (normalized_cross_correlation, True),
    "lncc": (local_normalized_cross_correlation, True),
    "mi": (mutual_information, True),
}


def similarity_loss(
    name: str,
    fixed: jnp.ndarray,
    warped: jnp.ndarray,
    *,
    roi: jnp.ndarray | None = None,
    mask: jnp.ndarray | None = None,
    **options,
) -> jnp.ndarray:
    """The named similarity as a loss to minimise, ``[B]``: SSD itself, the
    others negated (``-ncc``, ``-lncc``, ``-mi``). ``options`` go to the
    measure (``window=`` for lncc, ``num_bins=`` for mi)."""
    if name not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {sorted(SIMILARITIES)}, got {name!r}")
    function, higher_is_better = SIMILARITIES[name]
    value = function(fixed, warped, roi=roi, mask=mask, **options)
    return -value if higher_is_better else value


def _difference(values: jnp.ndarray, axis: int) -> jnp.ndarray:
    upper = jax.lax.slice_in_dim(values, 1, values.shape[axis], axis=axis)
    lower = jax.lax.slice_in_dim(values, 0, values.shape[axis] - 1, axis=axis)
    return upper - lower


def diffusion_penalty(
    displacement: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean squared forward difference of a displacement, summed over the axes
    (VoxelMorph's ``Grad('l2')``): the diffusion regulariser.

    Args:
        displacement: ``[B, *S, ndim]`` voxels.
        mask: ``[B]`` bool.

    Returns:
        ``[B]`` float32; 0 for a constant (translation) field.
    """
    axes = _spatial_axes(displacement)
    per_axis = [
        jnp.mean(jnp.square(_difference(displacement, axis)), axis=tuple(range(1, displacement.ndim)))
        for axis in axes
    ]
    return _zero_padded(sum(per_axis), mask)


def bending_energy(
    displacement: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean thin-plate bending energy of a displacement: squared second
    differences ``d²u/dx_i²`` plus twice the squared mixed ``d²u/dx_i dx_j``.

    Args:
        displacement: ``[B, *S, ndim]`` voxels.
        mask: ``[B]`` bool.

    Returns:
        ``[B]`` float32; 0 for any affine field.
    """
    axes = _spatial_axes(displacement)
    reduce = tuple(range(1, displacement.ndim))
    total = 0.0
    for i, first in enumerate(axes):
        once = _difference(displacement, first)
        for second in axes[i:]:
            twice = _difference(once, second)
            factor = 1.0 if second == first else 2.0
            total = total + factor * jnp.mean(jnp.square(twice), axis=reduce)
    return _zero_padded(total, mask)
