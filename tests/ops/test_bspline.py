"""Cubic B-spline free-form deformations: partition of unity, exact
reproduction of linear fields, and agreement with a direct evaluation."""

import numpy as np
import pytest

from medjax.ops import bspline


def test_kernel_values_and_partition_of_unity():
    np.testing.assert_allclose(bspline.cubic_bspline(np.array([0.0, 1.0, 2.0, 0.5])),
                               [2 / 3, 1 / 6, 0.0, 23 / 48])
    u = np.linspace(-0.5, 0.5, 11)
    total = sum(bspline.cubic_bspline(u - k) for k in range(-3, 4))
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_control_grid_covers_the_image():
    assert bspline.control_grid_shape((33, 20), 8) == (7, 6)
    assert bspline.control_grid_shape((33, 20, 9), (8, 4, 2)) == (7, 8, 7)
    with pytest.raises(ValueError, match="positive"):
        bspline.control_grid_shape((10, 10), (4,))


def test_linear_coefficients_give_the_linear_field_exactly():
    shape, spacing = (23, 17), 5
    grid_shape = bspline.control_grid_shape(shape, spacing)
    k = np.stack(np.meshgrid(*[(np.arange(n) - 1.0) * spacing for n in grid_shape],
                             indexing="ij"), -1)  # control point positions
    a = np.array([[0.02, -0.05], [0.1, 0.03]])
    coefficients = k @ a.T + np.array([0.7, -1.2])
    positions = [np.arange(n, dtype=np.float32) for n in shape]
    field = np.asarray(bspline.bspline_displacement(coefficients, spacing, positions))
    x = np.stack(np.meshgrid(*positions, indexing="ij"), -1)
    np.testing.assert_allclose(field, x @ a.T + np.array([0.7, -1.2]), atol=1e-5)


def test_against_a_direct_sum_in_3d_at_fractional_positions():
    rng = np.random.default_rng(0)
    spacing = (4, 3, 5)
    shape = (9, 7, 11)
    grid_shape = bspline.control_grid_shape(shape, spacing)
    coefficients = rng.normal(size=grid_shape + (3,)).astype(np.float32)
    positions = [np.array([0.0, 2.5, 8.0]), np.array([1.25, 6.0]), np.array([3.3])]
    field = np.asarray(bspline.bspline_displacement(coefficients, spacing, positions))
    assert field.shape == (3, 2, 1, 3)
    for i, x in enumerate(positions[0]):
        for j, y in enumerate(positions[1]):
            z = positions[2][0]
            expected = np.zeros(3)
            for a in range(grid_shape[0]):
                for b in range(grid_shape[1]):
                    for c in range(grid_shape[2]):
                        w = (bspline.cubic_bspline(x / spacing[0] - a + 1)
                             * bspline.cubic_bspline(y / spacing[1] - b + 1)
                             * bspline.cubic_bspline(z / spacing[2] - c + 1))
                        expected += w * coefficients[a, b, c]
            np.testing.assert_allclose(field[i, j, 0], expected, rtol=1e-5, atol=1e-6)
