"""The learned similarity tells aligned CT/MR patch pairs from misaligned ones on
slices it never saw, and as a registration loss is lowest near alignment."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data.datasets.phantoms import torso
from medjax.inferers.registration import normalize
from medjax.metrics.classification import auroc
from medjax.models.similarity import similarity_net_tiny
from medjax.ops import spatial
from medjax.tasks.registration import learned_similarity as learned

SIZE = 48


def _slices(seed, count):
    rng = np.random.default_rng(seed)
    cases = [torso.torso_slice(rng, SIZE) for _ in range(count)]
    ct = np.stack([normalize(c["image"].astype(np.float32)) for c in cases])
    mr = np.stack([normalize(c["mr_image"].astype(np.float32)) for c in cases])
    return ct, mr


@pytest.fixture(scope="module")
def trained():
    ct, mr = _slices(0, 24)
    return learned.train_learned_similarity(ct, mr, model=similarity_net_tiny(), steps=300,
                                            batch_size=64, learning_rate=3e-3)


def test_patch_pairs_are_aligned_then_shifted():
    ct, _ = _slices(1, 2)
    import jax

    pairs, labels = learned.sample_patch_pairs(jax.random.PRNGKey(0), jnp.asarray(ct),
                                               jnp.asarray(ct), count=16, patch=9, max_shift=4)
    assert pairs.shape == (16, 9, 9, 2)
    np.testing.assert_array_equal(labels, [1] * 8 + [0] * 8)
    same = np.all(np.asarray(pairs[..., 0]) == np.asarray(pairs[..., 1]), axis=(1, 2))
    assert same[:8].all() and not same[8:].any()  # the same image: only shifts differ


def test_scores_aligned_pairs_above_misaligned_on_unseen_slices(trained):
    assert trained.losses[-50:].mean() < 0.6 * trained.losses[:20].mean()
    ct, mr = _slices(2, 8)
    import jax

    pairs, labels = learned.sample_patch_pairs(jax.random.PRNGKey(5), jnp.asarray(ct),
                                               jnp.asarray(mr), count=256,
                                               patch=trained.model.receptive_field, max_shift=6)
    scores = np.asarray(trained.model.apply({"params": trained.params}, pairs)).reshape(-1)
    assert auroc(scores, np.asarray(labels)) > 0.85


def test_as_a_registration_loss_it_is_lowest_near_alignment(trained):
    ct, mr = _slices(3, 1)
    loss = trained.loss_function()
    fixed = jnp.asarray(ct[0])[..., None]
    values = []
    shifts = np.arange(-4.0, 5.0, 1.0)
    for shift in shifts:
        matrix = spatial.affine_matrix(2, translation=jnp.array([shift, 0.0]))
        warped = spatial.warp_affine(jnp.asarray(mr[0])[..., None], matrix)
        values.append(float(loss(fixed, warped, jnp.ones((SIZE, SIZE), bool))))
    assert abs(shifts[int(np.argmin(values))]) <= 1.0
    assert min(values) < values[0] and min(values) < values[-1]
