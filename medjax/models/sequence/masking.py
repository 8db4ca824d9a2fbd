"""Valid-length bookkeeping shared by the sequence models.

A batch of sequences ``[B, T, ...]`` has ``seq_lengths [B]``: steps
``0 .. seq_lengths[b] - 1`` of sequence ``b`` are valid, later steps are padding
(lengths must lie in ``1 .. T``; they are data, so not checked under jit).
``None`` means every sequence is ``T`` steps long.
"""

import jax.numpy as jnp


def lengths_or_full(seq_lengths: jnp.ndarray | None, batch: int, steps: int):
    """``seq_lengths [B]`` as int32, or ``[T] * B`` when None."""
    if seq_lengths is None:
        return jnp.full((batch,), steps, jnp.int32)
    return jnp.asarray(seq_lengths, jnp.int32).reshape(batch)


def time_mask(seq_lengths: jnp.ndarray, steps: int) -> jnp.ndarray:
    """``[B, T]`` bool: True at the valid steps of each sequence."""
    return jnp.arange(steps)[None, :] < seq_lengths[:, None]


def valid_steps(
    seq_lengths: jnp.ndarray | None, x: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """For a batch of sequences ``x [B, T, ...]``: its ``seq_lengths [B]`` int32
    (all ``T`` when None) and the ``[B, T]`` mask of its valid steps."""
    batch, steps = x.shape[:2]
    lengths = lengths_or_full(seq_lengths, batch, steps)
    return lengths, time_mask(lengths, steps)


def zero_padded_steps(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """``x [B, T, ...]`` with the steps where ``mask [B, T]`` is False set to 0."""
    mask = mask.reshape(mask.shape + (1,) * (x.ndim - 2))
    return jnp.where(mask, x, jnp.zeros((), x.dtype))


def masked_mean_over_time(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of ``x [B, T, ...]`` over the valid steps of each sequence -> ``[B, ...]``."""
    weights = mask.reshape(mask.shape + (1,) * (x.ndim - 2)).astype(x.dtype)
    total = jnp.sum(x * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1)


def masked_max_over_time(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Maximum of ``x [B, T, ...]`` over the valid steps of each sequence ->
    ``[B, ...]``: padded steps are set to the dtype's lowest value first, so they
    never win the max (nor get its gradient); every sequence has >= 1 valid step."""
    mask = mask.reshape(mask.shape + (1,) * (x.ndim - 2))
    return jnp.max(jnp.where(mask, x, jnp.finfo(x.dtype).min), axis=1)


def final_step(
    sequences: jnp.ndarray, seq_lengths: jnp.ndarray, bidirectional: bool
) -> jnp.ndarray:
    """The summary of each sequence ``[B, T, ..., C] -> [B, ..., C]``.

    Unidirectional: the output at the last valid step. Bidirectional (the forward
    direction's features in the first half of ``C``, the backward direction's in
    the second, as ``nn.Bidirectional`` concatenates them): the forward half at
    the last valid step and the backward half at step 0, where the backward
    direction has read every valid step.
    """
    index = (seq_lengths - 1).reshape((-1,) + (1,) * (sequences.ndim - 1))
    last = jnp.take_along_axis(sequences, index, axis=1)[:, 0]
    if not bidirectional:
        return last
    half = sequences.shape[-1] // 2
    return jnp.concatenate([last[..., :half], sequences[:, 0, ..., half:]], axis=-1)
