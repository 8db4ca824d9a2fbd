import numpy as np
import pytest

from medjax.data.datasets.phantoms.cine import CINE_LABELS, beating_heart, ejection_fraction
from medjax.data.datasets.phantoms.torso import case_rng


@pytest.fixture(scope="module")
def cases():
    return [beating_heart(case_rng(0, "train", i), 48, 12) for i in range(30)]


def test_shapes(cases):
    case = cases[0]
    assert case["image"].shape == (12, 48, 48) and case["mask"].shape == (12, 48, 48)
    assert set(np.unique(case["mask"])) <= set(CINE_LABELS.values())


def test_the_ventricle_contracts_and_relaxes(cases):
    for case in cases:
        areas = (case["mask"] == CINE_LABELS["lv_cavity"]).sum(axis=(1, 2))
        assert areas[0] == areas.max()  # end-diastole first
        assert areas[len(areas) // 2] == areas.min()  # end-systole mid-cycle
        assert case["ejection_fraction"] == pytest.approx(ejection_fraction(areas.astype(float)))


def test_ejection_fraction_separates_normal_hearts(cases):
    ef = np.array([c["ejection_fraction"] for c in cases])
    abnormal = np.array([c["label"] for c in cases]).astype(bool)
    assert 0.3 < abnormal.mean() < 0.7
    assert (ef[~abnormal] > 0.5).all()  # normal hearts eject more than half
    assert ef[abnormal].mean() < ef[~abnormal].mean()


def test_myocardium_thickens_in_systole(cases):
    case = cases[0]
    myocardium = (case["mask"] == CINE_LABELS["myocardium"]).sum(axis=(1, 2))
    cavity = (case["mask"] == CINE_LABELS["lv_cavity"]).sum(axis=(1, 2))
    # area is conserved while the cavity shrinks: relative wall area grows
    assert myocardium[6] / cavity[6] > myocardium[0] / cavity[0]
    assert abs(myocardium[6] - myocardium[0]) < 0.25 * myocardium[0]


def test_cine_pixels_are_mr_like(cases):
    case = cases[0]
    blood = case["image"][case["mask"] == CINE_LABELS["lv_cavity"]].mean()
    muscle = case["image"][case["mask"] == CINE_LABELS["myocardium"]].mean()
    assert blood > 2 * muscle  # bright blood, dark myocardium (bSSFP)
