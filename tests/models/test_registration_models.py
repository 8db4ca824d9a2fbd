"""Registration networks: the affine head starts at the identity, VoxelMorph's
flow starts near zero, and outputs have the input's grid for odd sizes in 2D
and 3D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.registration.affine import affine_net_tiny, normalised_to_voxel
from medjax.models.registration.voxelmorph import voxelmorph_diff_tiny, voxelmorph_tiny
from medjax.ops import spatial
from medjax.runtime import random_key


def _pair(shape, seed=0):
    return jax.random.normal(random_key(seed), (2, *shape, 2))


def test_affine_head_starts_at_the_identity():
    x = _pair((13, 17))
    model = affine_net_tiny(spatial_dims=2)
    variables = model.init(random_key(0), x, train=False)
    matrix = model.apply(variables, x, train=False)
    assert matrix.shape == (2, 3, 3)
    np.testing.assert_allclose(matrix, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-6)
    # and it can move: the head's bias shifts the matrix by a normalised amount.
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    bias = np.zeros(6, np.float32)
    bias[2] = 0.5  # translation along axis 0 by half the half-extent
    params["head"]["bias"] = jnp.asarray(bias)
    moved = model.apply({**variables, "params": params}, x, train=False)
    np.testing.assert_allclose(moved[0, 0, 2], 0.5 * (13 - 1) / 2, atol=1e-5)
    np.testing.assert_allclose(moved[0, :2, :2], np.eye(2), atol=1e-6)


def test_normalised_to_voxel_conjugates_a_zoom_about_the_centre():
    unit = jnp.diag(jnp.array([2.0, 2.0, 1.0]))
    voxel = normalised_to_voxel(unit, (9, 5))
    centre = jnp.array([[4.0, 2.0]])
    np.testing.assert_allclose(
        spatial.apply_homogeneous(voxel, centre), centre, atol=1e-6
    )
    corner = spatial.apply_homogeneous(voxel, jnp.array([[8.0, 4.0]]))
    np.testing.assert_allclose(corner, [[12.0, 6.0]], atol=1e-5)  # 2x from the centre


@pytest.mark.parametrize("shape", [(13, 11), (9, 7, 5)])
def test_output_shapes_for_odd_sizes(shape):
    dims = len(shape)
    x = _pair(shape)
    for make in (voxelmorph_tiny, voxelmorph_diff_tiny):
        model = make(spatial_dims=dims)
        variables = model.init(random_key(0), x, train=False)
        field = model.apply(variables, x, train=False)
        assert field.shape == (2, *shape, dims)
        # VoxelMorph's flow head starts at N(0, 1e-5): the field is almost zero.
        assert float(jnp.abs(field).max()) < 1e-2
    model = affine_net_tiny(spatial_dims=dims)
    variables = model.init(random_key(0), x, train=False)
    assert model.apply(variables, x, train=False).shape == (2, dims + 1, dims + 1)


def test_the_diffeomorphic_variant_integrates_its_velocity():
    x = _pair((16, 16))
    plain = voxelmorph_tiny(spatial_dims=2, flow_init_std=3.0)
    diff = voxelmorph_diff_tiny(
        spatial_dims=2, flow_init_std=3.0, integration_downsize=1
    )
    variables = plain.init(random_key(1), x, train=False)
    velocity = plain.apply(variables, x, train=False)
    field = diff.apply(variables, x, train=False)  # the same parameters
    assert float(jnp.abs(velocity).max()) > 1.0
    from medjax.ops.displacement import integrate_velocity

    expected = jax.vmap(lambda v: integrate_velocity(v, 7))(velocity)
    np.testing.assert_allclose(field, expected, atol=1e-5)
    assert not np.allclose(field, velocity, atol=1e-3)
