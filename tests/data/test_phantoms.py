import numpy as np
import pytest
import scipy.ndimage as ndi

from medjax.data.phantoms import ORGAN_LABELS, case_rng, torso_slice


@pytest.fixture(scope="module")
def cases():
    return [torso_slice(case_rng(0, "train", i), 64) for i in range(40)]


def test_same_seed_same_case_and_other_seed_differs():
    a = torso_slice(case_rng(3, "train", 7), 48)
    b = torso_slice(case_rng(3, "train", 7), 48)
    c = torso_slice(case_rng(3, "validation", 7), 48)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_shapes_and_types(cases):
    case = cases[0]
    assert case["image"].shape == (64, 64) and case["image"].dtype == np.int16
    assert case["organ_mask"].dtype == np.uint8 and case["lesion_mask"].dtype == np.uint8
    assert set(np.unique(case["organ_mask"])) <= set(ORGAN_LABELS.values())


def test_label_says_whether_a_lesion_is_visible(cases):
    labels = [int(c["label"]) for c in cases]
    assert labels == [int(c["lesion_mask"].any()) for c in cases]
    assert 0.25 < np.mean(labels) < 0.75  # both classes are common


def test_lesions_lie_inside_liver_or_lung(cases):
    for case in cases:
        lesion = case["lesion_mask"] > 0
        organ = case["organ_mask"][lesion]
        assert np.isin(organ, [ORGAN_LABELS["liver"], ORGAN_LABELS["lung"]]).all()
        # each instance is one connected piece
        for lesion_id in np.unique(case["lesion_mask"][lesion]):
            _, pieces = ndi.label(case["lesion_mask"] == lesion_id)
            assert pieces == 1


def test_tissue_intensities_are_ct_like(cases):
    lung, liver, air = [], [], []
    for case in cases:
        organs, image = case["organ_mask"], case["image"].astype(float)
        lung.append(np.median(image[organs == ORGAN_LABELS["lung"]]))
        liver.append(np.median(image[(organs == ORGAN_LABELS["liver"]) & (case["lesion_mask"] == 0)]))
        air.append(np.median(image[organs == 0]))
    assert -950 < np.mean(lung) < -700
    assert 70 < np.mean(liver) < 130
    assert -1030 < np.mean(air) < -950


def test_organs_lie_inside_the_body(cases):
    for case in cases:
        organs = case["organ_mask"]
        body = ndi.binary_fill_holes(organs > 0)
        # the body is one blob and no organ leaks outside it
        assert ndi.label(body)[1] == 1
        assert (organs[~body] == 0).all()
