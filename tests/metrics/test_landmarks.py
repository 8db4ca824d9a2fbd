"""Landmark metrics on hand-worked cases with anisotropic voxels (2 x 0.5 mm)."""

import numpy as np
import pytest

from medjax.metrics.landmarks import landmark_metrics, radial_errors, sdr_name

SPACING = (2.0, 0.5)
# Two examples, two landmarks; example 1's second landmark is absent, and its
# prediction (far off) must never count as an error.
TRUTH = np.array([[[0.0, 0.0], [10.0, 10.0]], [[5.0, 5.0], [0.0, 0.0]]])
PREDICTED = np.array([[[3.0, 4.0], [11.5, 12.0]], [[5.0, 9.0], [40.0, 40.0]]])
TRUTH_VALID = np.array([[True, True], [True, False]])
CALLED = np.array([[True, False], [True, True]])
# offsets x spacing: (6, 2) -> sqrt(40); (3, 1) -> sqrt(10); (0, 2) -> 2 mm
ERRORS_MM = np.array([np.sqrt(40.0), np.sqrt(10.0), 2.0])
ERRORS_VOXELS = np.array([5.0, 2.5, 4.0])


def test_radial_errors_scale_each_axis_by_its_spacing():
    errors = radial_errors(PREDICTED, TRUTH, SPACING)
    np.testing.assert_allclose(errors[TRUTH_VALID], ERRORS_MM)
    np.testing.assert_allclose(
        radial_errors(PREDICTED, TRUTH)[TRUTH_VALID], ERRORS_VOXELS
    )


def test_mre_sdr_and_presence_counts_by_hand():
    result = landmark_metrics(
        PREDICTED, TRUTH, TRUTH_VALID, CALLED, spacing=SPACING, names=("a", "b")
    )
    assert result["mre"] == pytest.approx(ERRORS_MM.mean())  # 3.8290
    assert result["mre_voxels"] == pytest.approx(ERRORS_VOXELS.mean())  # 3.8333
    assert result["mre_a"] == pytest.approx((np.sqrt(40.0) + 2.0) / 2)
    assert result["mre_b"] == pytest.approx(np.sqrt(10.0))  # the absent one left out
    assert result["mre_voxels_b"] == pytest.approx(2.5)
    # 2 mm is within 2 mm (inclusive); sqrt(10) = 3.16 only within 4 mm
    assert result["sdr_2mm"] == pytest.approx(1 / 3)
    assert result["sdr_2.5mm"] == pytest.approx(1 / 3)
    assert result["sdr_3mm"] == pytest.approx(1 / 3)
    assert result["sdr_4mm"] == pytest.approx(2 / 3)
    # example 1's absent landmark called present; example 0's second one missed
    assert result["false_positives"] == 1.0 and result["missed"] == 1.0
    assert result["presence_accuracy"] == pytest.approx(0.5)
    assert result["num_present"] == 3.0


def test_absent_landmarks_never_count_and_all_absent_gives_nan():
    moved = PREDICTED.copy()
    moved[1, 1] = [-100.0, 7.0]
    first = landmark_metrics(PREDICTED, TRUTH, TRUTH_VALID, spacing=SPACING)
    second = landmark_metrics(moved, TRUTH, TRUTH_VALID, spacing=SPACING)
    assert first == second
    assert first["false_positives"] == 1.0  # everything called present by default
    none = landmark_metrics(
        PREDICTED, TRUTH, np.zeros_like(TRUTH_VALID), spacing=SPACING
    )
    assert np.isnan(none["mre"]) and np.isnan(none["sdr_2mm"])
    assert none["false_positives"] == 4.0


def test_names_must_match_the_landmarks():
    with pytest.raises(ValueError, match="3 names for 2 landmarks"):
        landmark_metrics(PREDICTED, TRUTH, TRUTH_VALID, names=("a", "b", "c"))
    assert sdr_name(2.5) == "sdr_2.5mm" and sdr_name(2.0) == "sdr_2mm"
