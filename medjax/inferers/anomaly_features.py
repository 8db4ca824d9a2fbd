"""Feature-based anomaly maps (PatchCore, Roth et al. CVPR 2022, on features of
a network trained without lesion labels): per-location features of healthy
training images form a memory bank, subsampled at random; a voxel's anomaly is
the Euclidean distance of its feature to the nearest one in the bank."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def layer_features(
    model, variables: dict, images: jnp.ndarray, layers: Sequence[str], pool: int = 3
) -> jnp.ndarray:
    """Per-voxel features ``[B, *S, D]`` of ``images [B, *S, C]``: the outputs
    of the submodules named by ``layers`` (paths such as ``"unet/down_1"``),
    each averaged over a ``pool``-wide neighbourhood (PatchCore's local
    aggregation; stride 1, edges padded), resized linearly to the image grid
    and concatenated along channels, in the order of ``layers``.

    Raises:
        ValueError: a layer name matches no submodule.
    """
    wanted = set(layers)

    def capture(module, method_name):
        return method_name == "__call__" and "/".join(module.path) in wanted

    _, state = model.apply(
        variables, images, train=False, capture_intermediates=capture,
        mutable=["intermediates"],
    )
    found = {}
    for path, value in jax.tree_util.tree_flatten_with_path(
        state.get("intermediates", {})
    )[0]:
        names = [getattr(k, "key", None) for k in path]
        cut = names.index("__call__")
        found.setdefault("/".join(names[:cut]), value)
    missing = [name for name in layers if name not in found]
    if missing:
        raise ValueError(f"layer_features: no submodule {missing}; found {sorted(found)}")
    spatial = images.shape[1:-1]
    window = (1,) + (pool,) * len(spatial) + (1,)
    maps = []
    for name in layers:
        value = found[name].astype(jnp.float32)
        if pool > 1:
            value = jax.lax.reduce_window(
                value, 0.0, jax.lax.add, window, (1,) * value.ndim, "SAME"
            ) / jax.lax.reduce_window(
                jnp.ones_like(value[:1, ..., :1]), 0.0, jax.lax.add, window,
                (1,) * value.ndim, "SAME",
            )
        maps.append(
            jax.image.resize(value, (*value.shape[:1], *spatial, value.shape[-1]), "linear")
        )
    return jnp.concatenate(maps, axis=-1)


def memory_bank(
    features: np.ndarray, inside: np.ndarray, size: int, seed: int = 0
) -> np.ndarray:
    """``size`` features ``[size, D]`` drawn without replacement from the voxels
    of ``features [N, *S, D]`` where ``inside [N, *S]`` holds (all of them when
    there are fewer)."""
    features = np.asarray(features, np.float32)
    pool = features[np.asarray(inside, bool)]
    if len(pool) <= size:
        return pool
    rng = np.random.default_rng(seed)
    return pool[np.sort(rng.choice(len(pool), size, replace=False))]


@jax.jit
def _nearest_chunk(queries: jnp.ndarray, bank: jnp.ndarray) -> jnp.ndarray:
    squared = (
        jnp.sum(queries**2, -1, keepdims=True)
        - 2.0 * queries @ bank.T
        + jnp.sum(bank**2, -1)[None]
    )
    return jnp.sqrt(jnp.maximum(jnp.min(squared, axis=1), 0.0))


def nearest_distances(
    queries: np.ndarray, bank: np.ndarray, chunk: int = 8192
) -> np.ndarray:
    """Euclidean distance of each of ``queries [M, D]`` to its nearest neighbour
    in ``bank [K, D]``, ``[M]`` float32 (through ``|q|^2 - 2 q.b + |b|^2`` on the
    device, ``chunk`` queries at a time; float32 rounding aside, a brute force).
    """
    queries = np.asarray(queries, np.float32)
    bank = jnp.asarray(bank, jnp.float32)
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), chunk):
        part = queries[start:start + chunk]
        padded = np.zeros((chunk, queries.shape[1]), np.float32)
        padded[: len(part)] = part  # one compiled shape for every chunk
        out[start:start + len(part)] = np.asarray(_nearest_chunk(padded, bank))[: len(part)]
    return out


def distance_maps(features: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance maps ``[B, *S]`` of ``features [B, *S, D]``."""
    features = np.asarray(features, np.float32)
    flat = features.reshape(-1, features.shape[-1])
    return nearest_distances(flat, bank).reshape(features.shape[:-1])
