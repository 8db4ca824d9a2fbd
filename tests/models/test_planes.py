"""The orthogonal-plane locator: shapes per orientation, its 2D backbone's
parameters laid out as a CNN classifier's (so a 2D run transfers), and the
slices it cuts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.cnn import cnn_tiny
from medjax.models.groups import groups_of
from medjax.models.planes import planes_tiny
from medjax.runtime import random_key


@pytest.fixture(scope="module")
def initialised():
    model = planes_tiny(num_landmarks=3)
    x = jax.random.normal(random_key(0), (2, 7, 6, 5, 1))
    return model, x, model.init(random_key(1), x, train=False)


def test_logits_per_slice_of_each_orientation_and_presence(initialised):
    model, x, variables = initialised
    axis0, axis1, axis2, presence = model.apply(variables, x, train=False)
    assert (
        axis0.shape == (2, 7, 3)
        and axis1.shape == (2, 6, 3)
        and axis2.shape == (2, 5, 3)
    )
    assert presence.shape == (2, 3)


def test_backbone_has_the_layout_of_a_2d_cnn_classifier(initialised):
    _, _, variables = initialised
    cnn = cnn_tiny(num_classes=5).init(
        random_key(2), jnp.zeros((1, 8, 8, 1)), train=False
    )
    shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
    assert shapes(variables["params"]["backbone"]) == shapes(cnn["params"]["backbone"])
    groups = groups_of(planes_tiny(num_landmarks=3))
    assert (
        groups.backbones[0].name == "backbone" and groups.backbones[0].num_stages == 2
    )


def test_each_orientation_sees_its_own_slices(initialised):
    """Changing one axial slice changes one axial slice's features only: the
    axial head's logits elsewhere move only through the slice context."""
    model, x, variables = initialised
    model = model.clone(slice_context=1, slice_position=False)
    variables = model.init(random_key(1), x, train=False)
    before = model.apply(variables, x, train=False)
    after = model.apply(variables, x.at[:, :, :, 3].add(5.0), train=False)
    changed = np.abs(np.asarray(after[2] - before[2])).max(axis=(0, 2)) > 1e-6
    assert changed.tolist() == [False, False, False, True, False]
    # every coronal slice holds part of axial slice 3
    assert (np.abs(np.asarray(after[0] - before[0])).max(axis=(0, 2)) > 1e-6).all()


def test_volumes_only():
    with pytest.raises(ValueError, match=r"expects volumes \[B, X, Y, Z, C\]"):
        planes_tiny(num_landmarks=1).init(
            random_key(0), jnp.zeros((1, 8, 8, 1)), train=False
        )
