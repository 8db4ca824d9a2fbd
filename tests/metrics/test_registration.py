"""Registration metrics on hand-worked fields: the Jacobian determinant of a known
affine, folding, SD of log|J|, TRE of a known shift, warped-label Dice, HD95."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.metrics import registration as reg
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial


def _affine_field(linear, shape):
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape],
                                indexing="ij"), -1)
    return (grid @ (np.asarray(linear) - np.eye(len(shape))).T).astype(np.float32)


@pytest.mark.parametrize("linear", [
    [[1.1, 0.2], [-0.1, 0.9]],
    [[1.05, 0.1, 0.0], [0.0, 0.95, 0.2], [0.1, 0.0, 1.2]],
])
def test_jacobian_of_a_known_affine_is_its_determinant(linear):
    shape = (7, 6) if len(linear) == 2 else (5, 6, 4)
    field = _affine_field(linear, shape)[None]
    det = np.linalg.det(np.asarray(linear))
    np.testing.assert_allclose(dense_fields.jacobian_determinant(field[0]), det, rtol=1e-5)
    assert float(reg.folding_fraction(field)[0]) == 0.0
    # Constant det J: no spread of log det J.
    assert float(reg.std_log_jacobian(field)[0]) == pytest.approx(0.0, abs=1e-5)


def test_folding_fraction_counts_voxels_with_non_positive_determinant():
    # x -> -x along axis 0 on rows 0..3 folds there: det = -1 on the 4 x 5 rows
    # (central differences at the seam see a mix).
    field = np.zeros((1, 8, 5, 2), np.float32)
    field[0, :4, :, 0] = -2.0 * np.arange(4)[:, None]
    det = np.asarray(dense_fields.jacobian_determinant(field[0]))
    expected = np.mean(det <= 0)
    assert 0 < expected < 1
    assert float(reg.folding_fraction(field)[0]) == pytest.approx(expected)
    spread = float(reg.std_log_jacobian(field)[0])
    log_det = np.log(np.clip(det, 1e-9, 1e9))
    assert spread == pytest.approx(log_det.std(), rel=1e-5)


def test_tre_of_a_known_shift_in_mm_with_invalid_landmarks():
    shape = (10, 12)
    field = np.broadcast_to(np.array([1.0, -2.0], np.float32), shape + (2,))[None]
    fixed = np.array([[[2.0, 3.0], [5.5, 7.25], [1.0, 1.0]]], np.float32)
    moving = fixed + np.array([1.0, -2.0]) + np.array([[[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]])
    valid = np.array([[True, True, False]])
    errors = np.asarray(reg.target_registration_error(field, fixed, moving, valid=valid,
                                                      spacing=(2.0, 0.5)))
    np.testing.assert_allclose(errors[0, :2], [0.0, np.hypot(6.0, 2.0)], rtol=1e-6)
    assert np.isnan(errors[0, 2])
    padded = reg.target_registration_error(field, fixed, moving, mask=np.array([False]))
    np.testing.assert_array_equal(np.asarray(padded), 0.0)


def test_label_dice_of_a_shifted_square_and_its_correction():
    fixed = np.zeros((1, 12, 12), np.int32)
    fixed[0, 3:7, 3:7] = 1
    moving = np.roll(fixed, 2, axis=2)  # moved 2 voxels along spatial axis 1
    zero = np.zeros((1, 12, 12, 2), np.float32)
    dice = np.asarray(reg.label_dice(fixed, moving, zero, 2))
    assert dice[0, 1] == pytest.approx(2 * 8 / 32)  # 2 of 4 columns overlap
    correct = zero.copy()
    correct[..., 1] = 2.0  # read the moving image 2 voxels further on
    assert float(reg.label_dice(fixed, moving, correct, 2)[0, 1]) == 1.0
    # A structure absent from the fixed labels is NaN (left out of means).
    assert np.isnan(np.asarray(reg.label_dice(fixed, moving, zero, 3))[0, 2])


def test_label_hd95_of_a_shifted_square():
    fixed = np.zeros((12, 12), np.int32)
    fixed[3:7, 3:7] = 1
    warped = np.roll(fixed, 2, axis=1)
    hd = reg.label_hd95(fixed, warped, [1], spacing=(1.0, 1.5))
    assert hd[0] == pytest.approx(3.0)  # two columns of 1.5 mm
    assert np.isinf(reg.label_hd95(fixed, np.zeros_like(fixed), [1])[0])


def test_affine_then_its_inverse_is_the_identity():
    center = spatial.image_center((9, 11))
    matrix = spatial.affine_matrix(2, rotation=0.3, translation=jnp.array([1.0, -2.0]),
                                   zoom=jnp.array([1.1, 0.9]), shear=0.1, center=center)
    points = np.random.default_rng(0).uniform(0, 9, size=(20, 2)).astype(np.float32)
    back = spatial.transform_points(spatial.invert_affine(matrix),
                                    spatial.transform_points(matrix, points))
    np.testing.assert_allclose(np.asarray(back), points, atol=1e-5)
    np.testing.assert_allclose(np.asarray(spatial.invert_affine(matrix) @ matrix), np.eye(3),
                               atol=1e-6)
