"""Scaling and squaring of stationary velocity fields, and resizing fields."""

import jax.numpy as jnp
import numpy as np

from medjax.ops import displacement as dense_fields


def _swirl(shape, amplitude):
    """A smooth rotational field around the centre, ``amplitude`` voxels at most."""
    grid = np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1
    )
    centre = (np.asarray(shape, np.float32) - 1) / 2
    offset = (grid - centre) / (np.asarray(shape, np.float32) / 4)
    bump = np.exp(-np.sum(offset**2, -1))[..., None]
    rotated = np.stack([-offset[..., 1], offset[..., 0]], -1)
    return (amplitude * bump * rotated).astype(np.float32)


def test_zero_velocity_integrates_to_the_identity():
    velocity = jnp.zeros((21, 23, 2))
    np.testing.assert_array_equal(dense_fields.integrate_velocity(velocity, 7), 0.0)
    velocity = jnp.zeros((5, 6, 7, 3))
    np.testing.assert_array_equal(dense_fields.integrate_velocity(velocity, 7), 0.0)


def test_small_velocity_matches_the_displacement_to_first_order():
    for amplitude in (0.02, 0.04):
        velocity = _swirl((21, 23), amplitude)
        field = np.asarray(dense_fields.integrate_velocity(jnp.asarray(velocity), 7))
        error = np.abs(field - velocity).max()
        # Second order: halving the amplitude quarters the error.
        assert error < 0.05 * amplitude, (amplitude, error)
    small = np.abs(
        np.asarray(
            dense_fields.integrate_velocity(jnp.asarray(_swirl((21, 23), 0.02)), 7)
        )
        - _swirl((21, 23), 0.02)
    ).max()
    large = np.abs(
        np.asarray(
            dense_fields.integrate_velocity(jnp.asarray(_swirl((21, 23), 0.08)), 7)
        )
        - _swirl((21, 23), 0.08)
    ).max()
    assert 8 < large / small < 24  # 16 for a quadratic remainder


def test_a_constant_velocity_is_a_translation_and_zero_steps_return_it():
    velocity = jnp.broadcast_to(jnp.array([1.5, -0.75]), (21, 23, 2))
    np.testing.assert_allclose(
        dense_fields.integrate_velocity(velocity, 5), velocity, atol=1e-5
    )
    np.testing.assert_array_equal(
        dense_fields.integrate_velocity(velocity, 0), velocity
    )


def _bump(shape, amplitude, sigma):
    """A Gaussian bump pushing along axis 0: its gradient along the axis falls
    below -1 (the plain field folds) once ``amplitude > 1.65 sigma``."""
    grid = np.stack(
        np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1
    )
    centre = (np.asarray(shape, np.float32) - 1) / 2
    bump = np.exp(-np.sum((grid - centre) ** 2, -1) / (2 * sigma**2))
    field = np.zeros(shape + (2,), np.float32)
    field[..., 0] = amplitude * bump
    return field


def test_integration_stays_folding_free_where_the_plain_field_folds():
    velocity = _bump((21, 23), 8.0, 3.0)
    plain = np.asarray(dense_fields.jacobian_determinant(jnp.asarray(velocity)))
    assert (plain <= 0).mean() > 0.01
    field = dense_fields.integrate_velocity(jnp.asarray(velocity), 7)
    determinant = np.asarray(dense_fields.jacobian_determinant(field))
    assert determinant.min() > 0
    # It still moves as far: the flow carries the bump's centre by about its height.
    assert np.abs(np.asarray(field)).max() > 4.0


def test_resize_displacement_rescales_the_vectors():
    # An affine field d(x) = 0.1 x on an 8-grid is 0.1 x' on a 16-grid of the
    # same extent, in the finer grid's voxels (twice the numbers).
    coarse = jnp.broadcast_to(jnp.array([0.5, -1.0]), (8, 10, 2))
    fine = dense_fields.resize_displacement(coarse, (16, 20))
    assert fine.shape == (16, 20, 2)
    np.testing.assert_allclose(
        fine, jnp.broadcast_to(jnp.array([1.0, -2.0]), (16, 20, 2)), atol=1e-6
    )
    back = dense_fields.resize_displacement(fine, (8, 10))
    np.testing.assert_allclose(back, coarse, atol=1e-6)
