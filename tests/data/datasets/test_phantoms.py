import numpy as np
import pytest
import scipy.ndimage as ndi

from medjax.data.datasets.phantoms.torso import (
    LANDMARKS, LESION_TYPES, ORGAN_LABELS, case_rng, torso_slice, torso_volume,
)


@pytest.fixture(scope="module")
def slices():
    return [torso_slice(case_rng(0, "train", i), 64) for i in range(40)]


@pytest.fixture(scope="module")
def volumes():
    return [torso_volume(case_rng(0, "train", i), 32) for i in range(6)]


def test_same_seed_same_case_and_other_seed_differs():
    a = torso_slice(case_rng(3, "train", 7), 48)
    b = torso_slice(case_rng(3, "train", 7), 48)
    c = torso_slice(case_rng(3, "validation", 7), 48)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_shapes_and_types(slices, volumes):
    case = slices[0]
    assert case["image"].shape == (64, 64) and case["image"].dtype == np.int16
    assert case["mr_image"].shape == (64, 64)
    assert case["organ_mask"].dtype == np.uint8 and case["lesion_mask"].dtype == np.uint8
    assert set(np.unique(case["organ_mask"])) <= set(ORGAN_LABELS.values())
    assert case["lesion_centers"].shape == (3, 2) and case["landmarks"].shape == (len(LANDMARKS), 2)
    volume = volumes[0]
    assert volume["image"].shape == (32, 32, 32) and volume["lesion_centers"].shape == (5, 3)
    assert volume["landmarks"].shape == (len(LANDMARKS), 3)


def check_lesions(case):
    lesions, organs = case["lesion_mask"], case["organ_mask"]
    valid = case["lesion_valid"]
    assert int(case["label"]) == int(valid.any()) == int((lesions > 0).any())
    assert sorted(np.unique(lesions[lesions > 0])) == list(range(1, valid.sum() + 1))
    assert not valid[valid.sum():].any()  # valid rows come first
    for i in np.flatnonzero(valid):
        instance = lesions == i + 1
        center = tuple(np.round(case["lesion_centers"][i]).astype(int))
        assert instance[center], "every lesion centre lies inside its lesion"
        assert ndi.label(instance)[1] == 1, "each instance is one connected piece"
        kind = LESION_TYPES[case["lesion_types"][i]]
        organ = ORGAN_LABELS["lung" if kind == "lung_nodule" else "liver"]
        assert (organs[instance] == organ).all(), "lesions lie inside their organ"
        volume = instance.sum()
        expected = np.sqrt(volume / np.pi) if instance.ndim == 2 else np.cbrt(3 * volume / (4 * np.pi))
        assert case["lesion_radii"][i] == pytest.approx(expected, rel=1e-5)
    if valid.any():
        largest = np.argmax(np.where(valid, case["lesion_radii"], -1))
        assert case["lesion_type"] == case["lesion_types"][largest]
    else:
        assert case["lesion_type"] == 0


def test_lesion_labels_are_consistent(slices, volumes):
    for case in slices + volumes:
        check_lesions(case)
    labels = [int(c["label"]) for c in slices]
    assert 0.25 < np.mean(labels) < 0.75  # both classes are common
    kinds = {int(t) for c in slices for t, v in zip(c["lesion_types"], c["lesion_valid"]) if v}
    assert kinds == {1, 2, 3}  # hypodense, hyperdense and lung lesions all occur


def test_lesion_sizes_span_a_few_pixels_and_up(slices):
    radii = np.concatenate([c["lesion_radii"][c["lesion_valid"]] for c in slices])
    assert radii.min() < 2.5 and radii.max() > 4.0


def test_landmarks_lie_in_their_structures(slices, volumes):
    expected_organ = {"vertebral_body": "spine", "spinal_canal": "spine", "aorta": "aorta",
                      "right_kidney": "kidney", "left_kidney": "kidney", "spleen": "spleen"}
    for case in slices + volumes:
        for name, point, valid in zip(LANDMARKS, case["landmarks"], case["landmarks_valid"]):
            if valid:
                voxel = tuple(np.round(point).astype(int))
                assert case["organ_mask"][voxel] == ORGAN_LABELS[expected_organ[name]], name
    valid = np.array([c["landmarks_valid"] for c in slices])
    assert valid[:, :3].all()  # spine and aorta are in every slice
    # right kidney on the image's left (radiological convention), left on the right
    for case in volumes:
        right, left = case["landmarks"][3], case["landmarks"][4]
        assert right[1] < left[1]


def test_tissue_intensities_are_ct_like(slices):
    def median(case, organ):
        region = (case["organ_mask"] == ORGAN_LABELS[organ]) & (case["lesion_mask"] == 0)
        return np.median(case["image"][region]) if region.sum() > 10 else np.nan

    assert -950 < np.nanmean([median(c, "lung") for c in slices]) < -700
    assert 70 < np.nanmean([median(c, "liver") for c in slices]) < 130
    assert -1030 < np.nanmean([median(c, "background") for c in slices]) < -950
    assert np.nanmean([median(c, "aorta") for c in slices]) > 120  # contrast-enhanced


def test_mr_contrast_differs_from_ct(slices):
    case = slices[0]
    organs, ct, mr = case["organ_mask"], case["image"].astype(float), case["mr_image"].astype(float)
    # fat (the body rim) is dark in CT and the brightest tissue in T1 MR
    body = organs == ORGAN_LABELS["body"]
    rim = body & ~ndi.binary_erosion(organs > 0, iterations=2)
    liver = organs == ORGAN_LABELS["liver"]
    assert np.median(ct[rim]) < np.median(ct[liver])
    assert np.median(mr[rim]) > np.median(mr[liver])
    assert mr.min() >= 0


def test_organs_lie_inside_the_body(slices, volumes):
    for case in slices + volumes:
        organs = case["organ_mask"]
        body = ndi.binary_fill_holes(organs > 0)
        assert ndi.label(body)[1] == 1
        assert (organs[~body] == 0).all()
    present = {label for c in slices for label in np.unique(c["organ_mask"])}
    assert present == set(ORGAN_LABELS.values())  # every organ appears somewhere
