"""Connected components in jit against scipy.ndimage.label, and their
reductions against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from medjax.ops.components import component_reductions, connected_components


def _same_partition(ours, theirs):
    """Both labellings split the mask into the same sets of voxels."""
    assert np.array_equal(ours > 0, theirs > 0)
    pairs = set(zip(ours[ours > 0].tolist(), theirs[theirs > 0].tolist()))
    assert (
        len(pairs)
        == len(np.unique(ours[ours > 0]))
        == len(np.unique(theirs[theirs > 0]))
    )


@pytest.mark.parametrize("shape", [(23, 17), (9, 11, 7)])
def test_components_match_scipy_with_full_connectivity(shape):
    rng = np.random.default_rng(len(shape))
    mask = scipy.ndimage.gaussian_filter(rng.normal(size=shape), 1.2) > 0.15
    theirs, count = scipy.ndimage.label(mask, structure=np.ones((3,) * len(shape)))
    assert count >= 3
    ours = np.asarray(connected_components(jnp.asarray(mask)))
    _same_partition(ours, theirs)


def test_a_long_snake_converges():
    mask = np.zeros((15, 15), bool)
    mask[::2, :] = True  # rows joined alternately at the two ends: one path
    mask[1::4, -1] = mask[3::4, 0] = True
    labels = np.asarray(connected_components(jnp.asarray(mask)))
    assert len(np.unique(labels[mask])) == 1 and labels[~mask].max() == 0


def test_reductions_per_component():
    mask = np.zeros((8, 10), bool)
    mask[1:3, 1:4] = True
    mask[5:8, 6:9] = True
    values = np.arange(80, dtype=np.float32).reshape(8, 10) % 7
    labels = connected_components(jnp.asarray(mask))
    reduced = {
        k: np.asarray(v)
        for k, v in component_reductions(labels, jnp.asarray(values)).items()
    }
    first = values[1:3, 1:4]
    assert reduced["max"][1, 1] == first.max()
    assert reduced["mean"][2, 3] == pytest.approx(first.mean())
    flat = np.flatnonzero(
        (values == first.max()) & (np.asarray(labels) == np.asarray(labels)[1, 1])
    )[0]
    assert reduced["first_argmax"][1, 2] == flat
    np.testing.assert_array_equal(reduced["box"][6, 7], [5, 6, 7, 8])
