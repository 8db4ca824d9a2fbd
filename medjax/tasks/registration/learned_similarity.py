"""Train a learned similarity on aligned / misaligned patch pairs, and use it as
the similarity of iterative registration.

Pairs come from co-registered images of two modalities (the phantoms' CT and
MR twins share one anatomy): a *positive* is a patch of each at the same place;
a *negative* takes the second modality's patch shifted by 2 to ``max_shift``
voxels in a random direction, so the network learns what alignment looks like
across contrasts rather than what either contrast looks like. Intensities must
be normalised the same way in training and in use (``medjax.inferers.
registration.normalize``: percentiles to [0, 1]).

In registration the network is applied to the whole fixed image and the warped
moving image; the loss is minus the mean logit over the voxels whose patch lies
inside the overlap. Its gradient flows through the warped image into the
transform, as a hand-made similarity's does.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.engine.fit_arrays import fit_arrays
from medjax.models.similarity import PatchSimilarityNet
from medjax.runtime import random_key


def sample_patch_pairs(
    key: jax.Array,
    fixed: jnp.ndarray,
    moving: jnp.ndarray,
    *,
    count: int,
    patch: int,
    max_shift: int,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``count`` patch pairs from aligned images, half of them misaligned: the
    most structured ``count`` of ``4 * count`` random places (highest standard
    deviation of the first image's patch).

    Args:
        key: PRNG key.
        fixed, moving: ``[N, *S]`` aligned images of the two modalities.
        count: pairs drawn (even).
        patch: patch width in voxels.
        max_shift: the largest misalignment of a negative, voxels (>= 2).

    Returns:
        ``(pairs [count, *(patch,) * ndim, 2], labels [count])``: labels 1 for
        aligned pairs (the first half), 0 for misaligned.
    """
    ndim = fixed.ndim - 1
    shape = jnp.asarray(fixed.shape[1:])
    image_key, corner_key, shift_key, sign_key = jax.random.split(key, 4)
    # Four candidates per pair, the most structured kept: a patch of air or of
    # one uniform organ looks the same aligned or not, and would only add noise.
    candidates = 4 * count
    images = jax.random.randint(image_key, (candidates,), 0, fixed.shape[0])
    margin = max_shift
    corners = jax.random.randint(corner_key, (candidates, ndim), margin,
                                 shape - patch - margin + 1)
    magnitude = jax.random.randint(shift_key, (count, ndim), 0, max_shift + 1)
    sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, (count, ndim)), 1, -1)
    shifts = magnitude * sign
    # At least 2 voxels off along some axis: a one-voxel shift is near-aligned.
    too_small = jnp.max(jnp.abs(shifts), axis=1) < 2
    shifts = shifts.at[:, 0].set(jnp.where(too_small, 2 * sign[:, 0], shifts[:, 0]))
    negative = jnp.arange(count) >= count // 2
    shifts = jnp.where(negative[:, None], shifts, 0)

    def crop(image, corner):
        return jax.lax.dynamic_slice(image, corner, (patch,) * ndim)

    spread = jax.vmap(lambda i, c: jnp.std(crop(fixed[i], c)))(images, corners)
    keep = jax.lax.top_k(spread, count)[1]
    # top_k orders by spread: shuffle back so positives and negatives alike.
    keep = jax.random.permutation(jax.random.fold_in(key, 1), keep)
    images, corners = images[keep], corners[keep]
    fixed_patches = jax.vmap(crop)(fixed[images], corners)
    moving_patches = jax.vmap(crop)(moving[images], corners + shifts)
    pairs = jnp.stack([fixed_patches, moving_patches], axis=-1)
    return pairs, (~negative).astype(jnp.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedSimilarity:
    """A trained ``PatchSimilarityNet`` and its parameters.

    Attributes:
        model: the network.
        params: its trained parameters.
        losses: ``[steps]`` training losses.
    """

    model: PatchSimilarityNet
    params: Any
    losses: np.ndarray

    def logits(self, fixed: jnp.ndarray, moving: jnp.ndarray) -> jnp.ndarray:
        """Dense alignment logits of two images ``[*S]`` -> ``[*(S - rf + 1)]``."""
        pair = jnp.stack([fixed, moving], axis=-1)[None]
        return self.model.apply({"params": self.params}, pair)[0]

    def loss_function(self):
        """The similarity as ``IterativeRegistration``'s ``similarity_loss``:
        ``(fixed [*T, 1], warped [*T, 1], roi [*T]) -> -mean logit`` over the
        patches inside the roi (one function object: jit caches on it)."""
        field = self.model.receptive_field

        def loss(fixed, warped, roi):
            logits = self.logits(fixed[..., 0], warped[..., 0])
            inside = jax.lax.reduce_window(
                roi.astype(jnp.float32), 1.0, jax.lax.min, (field,) * roi.ndim,
                (1,) * roi.ndim, "VALID",
            )
            return -jnp.sum(logits * inside) / jnp.maximum(jnp.sum(inside), 1.0)

        return loss


def train_learned_similarity(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    model: PatchSimilarityNet | None = None,
    steps: int = 2000,
    batch_size: int = 64,
    max_shift: int = 6,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: str | None = None,
) -> LearnedSimilarity:
    """Trains the network to tell aligned from misaligned patch pairs.

    Args:
        fixed, moving: ``[N, *S]`` aligned, normalised images of two modalities.
        model: the network (default ``PatchSimilarityNet(spatial_dims=...)``).
        steps, batch_size, learning_rate: adam on the binary cross-entropy.
        max_shift: the largest misalignment of a negative pair, voxels.
        seed: parameters and pair sampling.
        progress: a progress bar's title (None: none).
    """
    fixed = jnp.asarray(fixed, jnp.float32)
    moving = jnp.asarray(moving, jnp.float32)
    model = model or PatchSimilarityNet(spatial_dims=fixed.ndim - 1)
    patch = model.receptive_field
    key = random_key(seed)
    init_key, data_key = jax.random.split(key)
    dummy = jnp.zeros((1,) + (patch,) * (fixed.ndim - 1) + (2,))
    params = model.init(init_key, dummy)["params"]

    def loss_fn(params, data, step_key):
        images_fixed, images_moving = data
        pairs, labels = sample_patch_pairs(step_key, images_fixed, images_moving,
                                           count=batch_size, patch=patch, max_shift=max_shift)
        logits = model.apply({"params": params}, pairs).reshape(batch_size)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

    fit = fit_arrays(loss_fn, params, (fixed, moving), tx=optax.adam(learning_rate),
                     steps=steps, order="full", key=data_key, steps_per_call=100,
                     progress=progress)
    return LearnedSimilarity(model=model, params=fit.params, losses=np.asarray(fit.losses))
