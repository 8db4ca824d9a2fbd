"""Patch sampling for training on crops of large images, with foreground
oversampling against class imbalance (pure JAX, runs inside the jitted step).

nnU-Net's scheme: a share ``foreground_fraction`` of the patches (a third in
nnU-Net) is centred on a foreground voxel; the rest are placed uniformly. To pick
a foreground centre, a foreground class present in the example is drawn uniformly
first and then a voxel of that class, so small structures (a 10-voxel aorta next
to a 2,000-voxel liver) are sampled as often as large ones. An example without
any foreground gets a uniform patch. Patches always lie inside the image.
"""

from typing import Sequence

import jax
import jax.numpy as jnp


def patch_corners_uniform(key, spatial_shape: Sequence[int], patch_size: Sequence[int]):
    """A uniformly drawn corner ``[ndim]`` (int32) of a patch inside the image."""
    highs = jnp.array([s - p for s, p in zip(spatial_shape, patch_size)]) + 1
    return jax.random.randint(key, (len(spatial_shape),), 0, highs).astype(jnp.int32)


def _foreground_center(key, labels: jnp.ndarray, num_classes: int):
    """A voxel ``[ndim]`` of a uniformly drawn foreground class present in
    ``labels [*S]``, and whether there was any foreground."""
    class_key, voxel_key = jax.random.split(key)
    classes = jnp.arange(1, num_classes)
    present = jnp.any(labels[None] == classes.reshape((-1,) + (1,) * labels.ndim),
                      axis=tuple(range(1, labels.ndim + 1)))
    has_foreground = jnp.any(present)
    chosen = jax.random.choice(class_key, classes, p=present / jnp.maximum(present.sum(), 1))
    voxels = (labels == chosen).reshape(-1)
    flat = jax.random.categorical(voxel_key, jnp.where(voxels, 0.0, -jnp.inf))
    center = jnp.stack(jnp.unravel_index(flat, labels.shape)).astype(jnp.int32)
    return center, has_foreground


def sample_patch_corners(
    key,
    labels: jnp.ndarray,
    patch_size: Sequence[int],
    *,
    num_classes: int,
    foreground_fraction: float = 1 / 3,
) -> jnp.ndarray:
    """Corners ``[B, ndim]`` of one patch per example of ``labels [B, *S]``.

    Args:
        key: PRNG key.
        labels: integer label maps; classes ``1..num_classes-1`` are foreground.
        patch_size: ``[ndim]`` patch extent, at most the image's.
        num_classes: number of label values (background included).
        foreground_fraction: probability that a patch is centred on foreground.
    """
    spatial, patch = labels.shape[1:], tuple(patch_size)
    if len(patch) != len(spatial) or any(p > s for p, s in zip(patch, spatial)):
        raise ValueError(f"patch_size {patch} does not fit in images of shape {spatial}")

    def one(key, example_labels):
        coin_key, uniform_key, foreground_key = jax.random.split(key, 3)
        uniform = patch_corners_uniform(uniform_key, spatial, patch)
        center, has_foreground = _foreground_center(foreground_key, example_labels, num_classes)
        half = jnp.array([p // 2 for p in patch])
        highs = jnp.array([s - p for s, p in zip(spatial, patch)])
        centred = jnp.clip(center - half, 0, highs).astype(jnp.int32)
        use_foreground = (jax.random.uniform(coin_key) < foreground_fraction) & has_foreground
        return jnp.where(use_foreground, centred, uniform)

    keys = jax.random.split(key, labels.shape[0])
    return jax.vmap(one)(keys, labels)


def extract_patches(
    array: jnp.ndarray, corners: jnp.ndarray, patch_size: Sequence[int]
) -> jnp.ndarray:
    """Patches ``[B, *patch_size, ...]`` of ``array [B, *S, ...]`` at ``corners
    [B, ndim]``; trailing axes (channels) are kept whole."""
    ndim = len(patch_size)

    def one(example, corner):
        trailing = example.shape[ndim:]
        starts = tuple(corner) + (0,) * len(trailing)
        return jax.lax.dynamic_slice(example, starts, tuple(patch_size) + trailing)

    return jax.vmap(one)(array, corners)
