"""The temporal part of augmentation, for fields with a ``time`` axis: a cyclic
phase shift and a temporal crop. Both only choose which frames an example keeps
and in which order; every field with a time axis (cine frames and their masks)
gets the same frames, before the geometry and intensity parts.

- **Phase shift** (``phase_shift_probability``): frames rolled by a shift drawn
  uniformly from ``1 .. T - 1``: frame ``t`` of the output is frame
  ``(t + shift) mod T``. Meant for sequences of exactly one cardiac cycle (the
  cine phantoms): the shifted sequence is the same cycle started at another
  phase, so a label of the whole cycle (the ejection fraction, the motion
  class) is unchanged; the sequence no longer starts at end-diastole.
- **Temporal crop** (``temporal_crop_frames = L``): every training sequence is
  cut to ``L`` consecutive frames starting at a uniform frame ``0 .. T - L``
  (after the phase shift, so shift + crop gives windows at any phase of a
  cycle). Evaluation sees whole sequences, so the model must accept any length
  (recurrent, frame-mean and pooled temporal models do). A crop keeps the
  label, which is right only when every window holds what the label is made
  of: a single-cycle cine cut short misses end-diastole or end-systole for most
  starts, and with them the ejection fraction it shows, so
  ``experiment=cine_ef`` uses the phase shift only; crops are for sequences
  longer than the event the label describes (EchoNet-Dynamic's clips of
  several beats).
"""

import jax
import jax.numpy as jnp

from medjax.augment import draws
from medjax.data import schema as roles


def timed_keys(schema: roles.Schema) -> tuple[str, ...]:
    """The keys of the fields with a time axis."""
    return tuple(name for name, role in schema if role.time)


def check(settings, batch, schema, *, batched: bool) -> None:
    """Before tracing: the fields with a time axis have the same number of
    frames ``T``, and a crop is no longer than ``T``. A batch without such fields
    is left to the other parts (``augment=cine`` on 2D slices moves no frame)."""
    keys = timed_keys(schema)
    if not keys:
        return
    axis = 1 if batched else 0
    lengths = {name: batch[name].shape[axis] for name in keys}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"augment: the fields with a time axis differ in length {lengths}"
        )
    frames = next(iter(lengths.values()))
    crop = settings.temporal_crop_frames
    if crop is not None and crop > frames:
        raise ValueError(
            f"augment.temporal_crop_frames={crop}: the sequences have {frames} frames"
        )


def frame_indices(settings, part_keys: dict, num_frames: int) -> jnp.ndarray:
    """``[L]`` int32: the frames one example keeps, in order (``L`` is
    ``temporal_crop_frames``, or ``T`` without a crop)."""
    indices = jnp.arange(num_frames)
    if settings.phase_shift_probability > 0.0:
        coin, value_key = draws.coin(
            part_keys["phase_shift"], settings.phase_shift_probability
        )
        shift = jax.random.randint(value_key, (), 1, max(num_frames, 2))
        indices = (indices + jnp.where(coin, shift, 0)) % num_frames
    crop = settings.temporal_crop_frames
    if crop is not None:
        start = jax.random.randint(
            part_keys["temporal_crop"], (), 0, num_frames - crop + 1
        )
        indices = jax.lax.dynamic_slice_in_dim(indices, start, crop)
    return indices


def move_frames(settings, part_keys: dict, example: dict, schema: roles.Schema) -> dict:
    """The example's fields with a time axis, their frames chosen alike (no
    batch axis: ``[T, ...]`` each); none without such fields."""
    keys = timed_keys(schema)
    if not keys:
        return {}
    indices = frame_indices(settings, part_keys, example[keys[0]].shape[0])
    return {name: jnp.take(example[name], indices, axis=0) for name in keys}
