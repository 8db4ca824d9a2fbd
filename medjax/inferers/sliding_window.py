"""Sliding-window inference for images and volumes larger than a model's input.

Follows MONAI's ``sliding_window_inference`` / ``compute_importance_map``
(monai/inferers/utils.py) conventions:

* stride along an axis is ``int(window * (1 - overlap))``, at least 1 (the whole
  window when it equals the image size); windows start at ``0, stride, 2*stride, ...``
  until one reaches the end, and the last one is shifted back to end flush with the
  image (``dense_patch_slices``);
* an image smaller than the window along an axis is padded symmetrically
  (``diff // 2`` before, the rest after) with ``padding_value`` and cropped back;
* the Gaussian importance map is ``exp(-x**2 / (2 sigma**2))`` per axis with
  ``x`` centred at ``(window - 1) / 2`` and ``sigma = sigma_scale * window``, its
  minimum raised to ``1e-3`` so window borders never get zero weight.

Differences from MONAI: the Gaussian map is divided by its maximum (so it is exactly
1 at the centre of odd windows and at the four (eight) central voxels of even ones;
the scale cancels in the weighted average), a single scalar ``overlap`` is used for
all axes, and there is no ``sw_device``/``device`` split: everything runs in one
jitted computation.

Pure JAX; imports no other medjax code.
"""

import itertools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("gaussian", "constant")
MIN_WEIGHT = 1e-3


def _gaussian_importance_map_np(
    window_size: Sequence[int], sigma_scale: float
) -> np.ndarray:
    weights = np.ones((), np.float64)
    for size in window_size:
        sigma = sigma_scale * size
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        axis = np.exp(-(x**2) / (2.0 * sigma**2))
        weights = np.multiply.outer(weights, axis)
    weights = weights / weights.max()
    return np.maximum(weights, MIN_WEIGHT)


def gaussian_importance_map(
    window_size: Sequence[int], sigma_scale: float = 0.125
) -> jnp.ndarray:
    """Gaussian weights for blending overlapping windows.

    Args:
        window_size: spatial window shape ``(h, w)`` or ``(h, w, d)``.
        sigma_scale: Gaussian sigma as a fraction of the window size, per axis.

    Returns:
        ``[*window_size]`` float32, separable Gaussian centred at ``(size - 1) / 2``
        per axis, normalised to max 1, clamped below at ``1e-3``.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale: expected > 0, got {sigma_scale}")
    weights = _gaussian_importance_map_np(tuple(window_size), sigma_scale)
    return jnp.asarray(weights, jnp.float32)


def sliding_window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start positions of the windows along one axis (MONAI convention).

    Args:
        size: image size along the axis (already padded to at least ``window``).
        window: window size along the axis.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).

    Returns:
        Increasing start indices; the first is 0 and the last is ``size - window``.
        E.g. size 10, window 4, overlap 0.5 -> ``[0, 2, 4, 6]``.
    """
    if window > size:
        raise ValueError(f"window {window} is larger than the size {size}; pad first")
    if window == size:
        return [0]
    stride = max(int(window * (1 - overlap)), 1)
    count = math.ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def sliding_window_positions(
    spatial_shape: Sequence[int], window_size: Sequence[int], overlap: float = 0.5
) -> list[tuple[int, ...]]:
    """All window start corners, row-major, for an image of at least window size."""
    per_axis = [
        sliding_window_starts(s, w, overlap) for s, w in zip(spatial_shape, window_size)
    ]
    return list(itertools.product(*per_axis))


def sliding_window_predict(
    predict_fn: Callable[[jnp.ndarray], jnp.ndarray],
    images: jnp.ndarray,
    window_size: Sequence[int],
    *,
    overlap: float = 0.5,
    weighting: str = "gaussian",
    sigma_scale: float = 0.125,
    window_batch_size: int = 8,
    padding_value: float = 0.0,
) -> jnp.ndarray:
    """Predicts a dense output by blending a model's predictions on overlapping windows.

    Every output voxel is the weighted average, with the importance map as weights,
    of the predictions of all windows that cover it.

    All windows of all ``B`` images are enumerated in Python from the static shapes,
    then a ``jax.lax.scan`` over chunks of ``window_batch_size`` windows cuts each
    chunk out (``dynamic_slice``), runs ``predict_fn`` on it and adds the weighted
    predictions into a ``[B, *spatial, K]`` accumulator. The scan traces
    ``predict_fn`` once, so compile time does not grow with the number of windows,
    and memory is the accumulator plus one chunk of windows and predictions. The
    last chunk is filled up with repeats of the last window given zero weight. The
    normalising sum of weights depends only on shapes, so it is computed in numpy.
    Jit-compatible: ``images`` may be traced; ``predict_fn`` (closing over its
    parameters), ``window_size`` and the keyword options must be static.

    Args:
        predict_fn: maps windows ``[N, *window_size, C]`` to ``[N, *window_size, K]``
            (e.g. ``lambda w: model.apply(variables, w, train=False)``).
        images: ``[B, *spatial, C]`` with 2 or 3 spatial axes.
        window_size: spatial window shape, one entry per spatial axis.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        weighting: 'gaussian' (see ``gaussian_importance_map``) or 'constant'.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        window_batch_size: windows per ``predict_fn`` call (fewer when there are
            fewer windows in all).
        padding_value: value for padding images smaller than the window.

    Returns:
        ``[B, *spatial, K]`` float32.
    """
    spatial = tuple(images.shape[1:-1])
    window_size = tuple(int(w) for w in window_size)
    if images.ndim < 3:
        raise ValueError(
            f"sliding_window_predict: images must be [B, *spatial, C], got shape "
            f"{images.shape}"
        )
    if len(window_size) != len(spatial) or min(window_size) < 1:
        raise ValueError(
            f"sliding_window_predict: window_size {window_size} must give a positive "
            f"size for each of the {len(spatial)} spatial axes of images {images.shape}"
        )
    if not 0.0 <= overlap < 1.0:
        raise ValueError(
            f"sliding_window_predict: overlap must be in [0, 1), got {overlap}"
        )
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"sliding_window_predict: weighting must be one of {WEIGHTINGS}, "
            f"got {weighting!r}"
        )
    if window_batch_size < 1:
        raise ValueError(
            f"sliding_window_predict: window_batch_size must be >= 1, "
            f"got {window_batch_size}"
        )

    # pad axes smaller than the window, symmetrically like MONAI
    before = [max(w - s, 0) // 2 for s, w in zip(spatial, window_size)]
    after = [max(w - s, 0) - b for s, w, b in zip(spatial, window_size, before)]
    if any(before) or any(after):
        images = jnp.pad(
            images,
            [(0, 0), *zip(before, after), (0, 0)],
            constant_values=jnp.asarray(padding_value, images.dtype),
        )
    padded = tuple(images.shape[1:-1])
    batch, channels = images.shape[0], images.shape[-1]

    if weighting == "gaussian":
        weight_np = _gaussian_importance_map_np(window_size, sigma_scale)
    else:
        weight_np = np.ones(window_size)

    positions = sliding_window_positions(padded, window_size, overlap)
    weight_sum = np.zeros(padded)
    for corner in positions:
        region = tuple(slice(c, c + w) for c, w in zip(corner, window_size))
        weight_sum[region] += weight_np

    # (image index, *corner) for every window, padded to whole chunks
    starts = np.array([(b, *c) for b in range(batch) for c in positions], np.int32)
    num_windows = len(starts)
    chunk = min(window_batch_size, num_windows)
    num_chunks = -(-num_windows // chunk)
    fill = num_chunks * chunk - num_windows
    valid = np.concatenate([np.ones(num_windows), np.zeros(fill)]).astype(np.float32)
    starts = np.concatenate([starts, np.repeat(starts[-1:], fill, axis=0)])
    starts = starts.reshape(num_chunks, chunk, -1)
    valid = valid.reshape(num_chunks, chunk)

    weight = jnp.asarray(weight_np, jnp.float32)[..., None]
    window_shape = (1, *window_size, channels)

    def cut(start):
        corner = jnp.concatenate([start, jnp.zeros((1,), start.dtype)])
        return jax.lax.dynamic_slice(images, corner, window_shape)[0]

    def add_window(acc, item):
        start, prediction = item
        corner = jnp.concatenate([start, jnp.zeros((1,), start.dtype)])
        size = (1, *window_size, acc.shape[-1])
        current = jax.lax.dynamic_slice(acc, corner, size)
        acc = jax.lax.dynamic_update_slice(acc, current + prediction[None], corner)
        return acc, None

    # the output width K sizes the accumulator; checking the shape here also
    # reports a wrong predict_fn before anything is compiled
    window_spec = jax.ShapeDtypeStruct((chunk, *window_size, channels), images.dtype)
    out_spec = jax.eval_shape(predict_fn, window_spec)
    expected = (chunk, *window_size)
    if not hasattr(out_spec, "shape") or out_spec.shape[:-1] != expected:
        raise ValueError(
            f"sliding_window_predict: predict_fn maps windows {window_spec.shape} to "
            f"{getattr(out_spec, 'shape', type(out_spec))}; expected "
            f"[{chunk}, *{window_size}, K]"
        )
    num_outputs = out_spec.shape[-1]

    def step(acc, chunk):
        chunk_starts, chunk_valid = chunk
        windows = jax.vmap(cut)(chunk_starts)
        predictions = predict_fn(windows).astype(jnp.float32)
        scale = chunk_valid.reshape((-1,) + (1,) * (predictions.ndim - 1))
        predictions = predictions * weight * scale
        acc, _ = jax.lax.scan(add_window, acc, (chunk_starts, predictions))
        return acc, None

    acc = jnp.zeros((batch, *padded, num_outputs), jnp.float32)
    acc, _ = jax.lax.scan(step, acc, (jnp.asarray(starts), jnp.asarray(valid)))
    outputs = acc / jnp.asarray(weight_sum, jnp.float32)[None, ..., None]
    crop = tuple(slice(b, b + s) for b, s in zip(before, spatial))
    return outputs[(slice(None), *crop, slice(None))]
