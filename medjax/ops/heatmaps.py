"""Gaussian heatmaps of points, their decoding to sub-voxel coordinates, and peak
finding by max-pooling: the shared machinery of heatmap landmark localisation and
CenterNet-style detection.

Pure JAX, no medjax import above ``ops``; jit-able, and batched with
``jax.vmap``. Coordinates are voxel indices in array-axis order, the frame of
``medjax.ops.spatial`` and of the data's ``points`` fields: voxel ``i`` has its
centre at ``i``.

Decoding a heatmap to a point:

- ``argmax_refined``: the integer maximum, then one parabola per axis through the
  maximum and its two neighbours. On the logarithm of the heatmap
  (``log_domain=True``, the default) a Gaussian is exactly a parabola, so the
  centre of a sampled Gaussian is recovered to rounding; on the values themselves
  it is the classic quadratic interpolation (biased toward the voxel centre).
- ``soft_argmax``: the expectation of the coordinates under a spatial softmax of
  ``beta * heatmap``: differentiable, but pulled toward the image centre by the
  tails unless ``beta`` is large.

``local_peaks`` is CenterNet's decoding: a voxel is a peak when it equals the
maximum of its ``window`` neighbourhood (a max-pool instead of NMS), and the
``k`` highest peaks are kept.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def _grid(shape: Sequence[int]) -> jnp.ndarray:
    """``[*S, ndim]`` voxel coordinates of a grid."""
    axes = [jnp.arange(size, dtype=jnp.float32) for size in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def gaussian_heatmaps(
    points: jnp.ndarray,
    shape: Sequence[int],
    sigma: float | jnp.ndarray,
    valid: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """One unnormalised Gaussian per point, peak value 1 at the point.

    Args:
        points: ``[N, ndim]`` voxel coordinates (sub-voxel allowed).
        shape: the spatial shape ``S`` (``ndim`` sizes).
        sigma: the standard deviation in voxels, a scalar, ``[N]`` (one per
            point) or ``[N, ndim]`` (one per point and axis).
        valid: ``[N]`` bool; invalid points give all-zero maps.

    Returns:
        ``[*S, N]`` float32.
    """
    points = jnp.asarray(points, jnp.float32)
    count, ndim = points.shape
    if len(shape) != ndim:
        raise ValueError(f"gaussian_heatmaps: {ndim}-D points for a {len(shape)}-D shape")
    sigma = jnp.asarray(sigma, jnp.float32)
    if sigma.ndim == 1:
        sigma = sigma[:, None]
    sigma = jnp.broadcast_to(sigma, (count, ndim))
    offsets = _grid(shape)[..., None, :] - points  # [*S, N, ndim]
    maps = jnp.exp(-0.5 * jnp.sum(jnp.square(offsets / sigma), axis=-1))
    if valid is not None:
        maps = jnp.where(jnp.asarray(valid, bool), maps, 0.0)
    return maps


def gaussian_peak_map(
    points: jnp.ndarray,
    shape: Sequence[int],
    sigma: float | jnp.ndarray,
    valid: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """CenterNet's target: the element-wise maximum of the points' Gaussians.

    Args and shapes as ``gaussian_heatmaps``.

    Returns:
        ``[*S]`` float32 in [0, 1]; 0 everywhere when no point is valid.
    """
    maps = gaussian_heatmaps(points, shape, sigma, valid)
    return jnp.max(maps, axis=-1, initial=0.0)


def _neighbour_values(maps: jnp.ndarray, index: jnp.ndarray, axis: int):
    """Values of ``maps [*S]`` at ``index [ndim]`` and at its two neighbours
    along ``axis`` (clamped at the edges), and whether both neighbours exist."""
    size = maps.shape[axis]
    below = index.at[axis].set(jnp.maximum(index[axis] - 1, 0))
    above = index.at[axis].set(jnp.minimum(index[axis] + 1, size - 1))
    inside = (index[axis] > 0) & (index[axis] < size - 1)
    return maps[tuple(below)], maps[tuple(index)], maps[tuple(above)], inside


def _refine_one(maps: jnp.ndarray, log_domain: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The refined maximum ``[ndim]`` and peak value of one map ``[*S]``."""
    index = jnp.asarray(jnp.unravel_index(jnp.argmax(maps), maps.shape), jnp.int32)
    peak = maps[tuple(index)]
    values = jnp.log(jnp.maximum(maps, 1e-30)) if log_domain else maps
    offsets = []
    for axis in range(maps.ndim):
        low, mid, high, inside = _neighbour_values(values, index, axis)
        curvature = low - 2 * mid + high
        # A parabola's vertex; at an edge, or where the neighbourhood is flat or
        # not concave, the voxel itself.
        fit = inside & (curvature < 0)
        offset = jnp.where(fit, 0.5 * (low - high) / jnp.where(fit, curvature, -1.0), 0.0)
        offsets.append(jnp.clip(offset, -0.5, 0.5))
    return index.astype(jnp.float32) + jnp.stack(offsets), peak


@functools.partial(jax.jit, static_argnames=("log_domain",))
def argmax_refined(
    heatmaps: jnp.ndarray, *, log_domain: bool = True
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Sub-voxel maxima of heatmaps: the argmax, refined by a parabola per axis.

    Args:
        heatmaps: ``[*S, N]``, one map per point (channels last).
        log_domain: fit the parabola to ``log(heatmap)`` (exact for Gaussians;
            values are clipped at 1e-30 first) rather than to the values.

    Returns:
        ``(points [N, ndim] float32, peaks [N])``: the coordinates and each map's
        maximum value (a presence score).
    """
    maps = jnp.moveaxis(heatmaps, -1, 0)
    return jax.vmap(lambda m: _refine_one(m, log_domain))(maps)


@jax.jit
def soft_argmax(heatmaps: jnp.ndarray, beta: float = 1.0) -> jnp.ndarray:
    """The expected coordinates under ``softmax(beta * heatmap)`` over space.

    Args:
        heatmaps: ``[*S, N]``.
        beta: the softmax's inverse temperature.

    Returns:
        ``[N, ndim]`` float32.
    """
    shape = heatmaps.shape[:-1]
    logits = beta * heatmaps.reshape(-1, heatmaps.shape[-1]).astype(jnp.float32)
    weights = jax.nn.softmax(logits, axis=0)  # [V, N]
    return weights.T @ _grid(shape).reshape(-1, len(shape))


@functools.partial(jax.jit, static_argnames=("k", "window"))
def local_peaks(
    heatmap: jnp.ndarray,
    k: int,
    *,
    window: int = 3,
    threshold: float | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The ``k`` highest local maxima of one heatmap (CenterNet's decoding).

    A voxel is a local maximum when it equals the maximum over the
    ``window``-wide neighbourhood centred on it (a stride-1 max-pool, padded
    with -inf); plateaus keep every voxel of the plateau.

    Args:
        heatmap: ``[*S]``.
        k: the number of peaks returned (static).
        window: the neighbourhood's width, odd.
        threshold: if given, peaks at or below it are marked invalid.

    Returns:
        ``(indices [k, ndim] int32, scores [k], valid [k] bool)`` by descending
        score; invalid rows hold the lowest-scoring voxels left.
    """
    if window % 2 != 1:
        raise ValueError(f"local_peaks: window must be odd, got {window}")
    ndim = heatmap.ndim
    pooled = jax.lax.reduce_window(
        heatmap, -jnp.inf, jax.lax.max, (window,) * ndim, (1,) * ndim,
        [(window // 2, window // 2)] * ndim,
    )
    peaks = jnp.where(heatmap >= pooled, heatmap, -jnp.inf).reshape(-1)
    scores, flat = jax.lax.top_k(peaks, k)
    indices = jnp.stack(jnp.unravel_index(flat, heatmap.shape), axis=-1).astype(jnp.int32)
    valid = jnp.isfinite(scores)
    if threshold is not None:
        valid = valid & (scores > threshold)
    return indices, jnp.where(jnp.isfinite(scores), scores, heatmap.reshape(-1)[flat]), valid
