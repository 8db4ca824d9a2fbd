"""The classical CAD pipeline on synthetic images with known discs."""

import warnings

import numpy as np
import pytest
from skimage.measure import regionprops

from medjax.metrics.detection import froc, match_candidates
from medjax.tasks.detection import (
    FEATURE_NAMES,
    CADDetector,
    Candidates,
    Lesions,
    blob_candidates,
    body_mask,
    cad_features,
    candidate_features,
    candidate_hits,
)

SIZE = 48


def _disc(centre, radius, shape=(SIZE, SIZE)):
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _body(rng, noise=6.0):
    """A soft-tissue ellipse of 40 HU in air, with noise."""
    rows, cols = np.indices((SIZE, SIZE))
    inside = ((rows - 23.5) / 22) ** 2 + ((cols - 23.5) / 22) ** 2 <= 1
    return np.where(inside, 40.0, -1000.0) + rng.normal(0, noise, (SIZE, SIZE))


def _case(rng, count):
    """A body with ``count`` discs of +-60 HU, radius 2.5 to 4, away from the
    edge and each other; returns HU and ``Lesions`` with an instance map."""
    hu, ids = _body(rng), np.zeros((SIZE, SIZE), np.uint8)
    centres, radii = [], []
    while len(centres) < count:
        centre, radius = rng.uniform(14, 34, 2), rng.uniform(2.5, 4.0)
        if all(np.linalg.norm(centre - c) > 12 for c in centres):
            disc = _disc(centre, radius)
            hu[disc] += 60.0 if rng.random() < 0.5 else -60.0
            ids[disc] = len(centres) + 1
            centres.append(centre)
            radii.append(radius)
    return hu, Lesions(np.reshape(centres, (-1, 2)), np.asarray(radii), ids)


def test_body_mask_fills_the_lungs_and_drops_outside_air():
    hu = _body(np.random.default_rng(0), noise=0)
    hu[_disc((24, 14), 5)] = -850.0  # a lung: a hole in the body
    hu[:3, :3] = 40.0  # a speck outside: not the largest component
    body = body_mask(hu)
    assert body[24, 14] and body[24, 24]
    assert not body[1, 1] and not body[0, 24]


def test_candidates_hit_bright_and_dark_discs():
    rng = np.random.default_rng(1)
    hu = _body(rng)
    discs = [((16, 16), 3.0, +60), ((16, 32), 3.5, -60), ((32, 24), 2.5, +80)]
    for centre, radius, step in discs:
        hu[_disc(centre, radius)] += step
    found = blob_candidates(hu)
    polarity_near = []
    for centre, radius, step in discs:
        distance = np.linalg.norm(found.points - centre, axis=1)
        assert distance.min() < radius, (centre, distance.min())
        polarity_near.append(found.polarity[np.argmin(distance)])
    # The nearest candidate has the disc's polarity.
    assert polarity_near == [1.0, -1.0, 1.0]
    # Deduplicated: no two candidates closer than 2 px.
    gaps = np.linalg.norm(found.points[:, None] - found.points[None], axis=-1)
    assert gaps[np.triu_indices(len(gaps), 1)].min() >= 2.0


@pytest.mark.parametrize("shape, dtype", [((40, 48), np.float64), ((24, 28, 32), np.float32)])
def test_log_blobs_are_blob_logs_maxima_with_their_response(shape, dtype):
    from scipy import ndimage as ndi
    from skimage.feature import blob_log

    # Smoothed noise: dozens of maxima over scales, in 2D and 3D.
    image = ndi.gaussian_filter(np.random.default_rng(3).random(shape), 1.0).astype(dtype)
    points, sigma, response = cad_features.log_blobs(image, (0.8, 2.4), 5, 0.0005)
    reference = blob_log(image, min_sigma=0.8, max_sigma=2.4, num_sigma=5,
                         threshold=0.0005, overlap=1.0, exclude_border=1)
    assert len(points) > 30
    np.testing.assert_array_equal(points, reference[:, :-1])
    np.testing.assert_allclose(sigma, reference[:, -1], rtol=1e-6)
    # The response is the scale-normalised LoG at the point, at its scale.
    for k in (0, len(points) // 2, len(points) - 1):
        log = -(sigma[k] ** 2) * ndi.gaussian_laplace(image.astype(np.float64), sigma[k])
        np.testing.assert_allclose(response[k], log[tuple(points[k])], rtol=1e-4)


def test_flat_noise_gives_few_candidates_and_none_outside_the_body():
    hu = _body(np.random.default_rng(2))
    # 6 HU of noise at W400, nothing else: the skin line (the air outside set
    # to the body's median) and the noise give (almost) no blob.
    found = blob_candidates(hu)
    assert len(found.points) <= 3
    loose = blob_candidates(hu, threshold=0.005)  # many noise blobs, all inside
    assert len(loose.points) > 20
    assert body_mask(hu)[tuple(np.rint(loose.points).astype(int).T)].all()


def test_contrast_feature_by_hand():
    # A disc of +50 HU on 0 HU, no noise: mean 50, ring mean 0, contrast 50.
    hu = np.zeros((SIZE, SIZE))
    hu[_disc((24, 24), 4)] = 50.0
    candidates = Candidates(
        points=np.array([[24.0, 24.0]]),
        radii=np.array([3.0]),
        polarity=np.array([1.0]),
        response=np.array([1.0]),
    )
    features = candidate_features(hu, candidates, body=np.ones_like(hu, bool))
    named = dict(zip(FEATURE_NAMES, features[0]))
    assert named["mean_hu"] == pytest.approx(50.0)
    assert named["sd_hu"] == pytest.approx(0.0)
    # The ring (r + 1, 2r + 2] = (4, 8] holds no disc voxel (the disc ends at 4).
    assert named["ring_mean_hu"] == pytest.approx(0.0)
    assert named["contrast_hu"] == pytest.approx(50.0)
    assert named["contrast_to_noise"] == pytest.approx(50.0)  # ring sd 0, + 1
    # The threshold segment is the disc: its area and regionprops' shape.
    (reference,) = regionprops(_disc((24, 24), 4).astype(np.uint8))
    assert named["segment_area"] == reference.area
    assert named["segment_eccentricity"] == pytest.approx(
        reference.eccentricity, abs=1e-9
    )
    assert named["segment_solidity"] == pytest.approx(reference.solidity)
    assert named["segment_offset"] == pytest.approx(0.0, abs=1e-9)
    assert named["body_depth"] == pytest.approx(24.0)  # to the edge of the image


def test_eccentricity_of_an_elongated_segment_matches_regionprops():
    rows, cols = np.indices((SIZE, SIZE))
    ellipse = ((rows - 24) / 3) ** 2 + ((cols - 24) / 7) ** 2 <= 1
    hu = np.where(ellipse, 80.0, 0.0)
    candidates = Candidates(
        np.array([[24.0, 24.0]]), np.array([4.0]), np.array([1.0]), np.array([1.0])
    )
    features = candidate_features(hu, candidates, body=np.ones_like(hu, bool))
    (reference,) = regionprops(ellipse.astype(np.uint8))
    eccentricity = features[0, FEATURE_NAMES.index("segment_eccentricity")]
    assert eccentricity == pytest.approx(reference.eccentricity, abs=1e-9)
    assert eccentricity > 0.8


def test_candidate_hits_follow_match_candidates():
    lesions = Lesions(np.array([[10.0, 10.0], [30.0, 30.0]]), np.array([3.0, 2.0]))
    points = np.array([[10.0, 12.9], [10.0, 13.0], [30.0, 31.0], [20.0, 20.0]])
    np.testing.assert_array_equal(
        candidate_hits(points, lesions), [True, False, True, False]
    )
    # On the instance map but outside the radius: a hit too.
    ids = np.zeros((40, 40), np.uint8)
    ids[20, 20] = 1
    with_map = Lesions(lesions.centers, lesions.radii, ids)
    np.testing.assert_array_equal(
        candidate_hits(points, with_map), [True, False, True, True]
    )


def _dataset(seed, count):
    rng = np.random.default_rng(seed)
    cases = [_case(rng, n) for n in rng.integers(0, 3, count)]
    return np.stack([hu for hu, _ in cases]), [lesions for _, lesions in cases]


def _cpm(detections, lesions):
    return froc(
        [
            match_candidates(
                d.points, d.scores, t.centers, t.radii, instance_map=t.instance_map
            )
            for d, t in zip(detections, lesions)
        ]
    )["cpm"]


def test_fit_detect_beats_a_random_scorer_and_is_deterministic():
    train_hu, train_lesions = _dataset(3, 16)
    test_hu, test_lesions = _dataset(4, 10)
    cad = CADDetector(n_estimators=30, random_state=0)
    detections = cad.fit(train_hu, train_lesions).detect(test_hu)
    assert all(np.all(np.diff(d.scores) <= 0) for d in detections)  # best first
    # The same candidates with random scores.
    rng = np.random.default_rng(0)
    shuffled = [
        type(d)(d.points, rng.random(len(d.scores)), d.radii) for d in detections
    ]
    cpm, chance = _cpm(detections, test_lesions), _cpm(shuffled, test_lesions)
    assert cpm > 0.8, cpm
    assert cpm > chance + 0.3, (cpm, chance)
    # Same seed, same scores; extract once, fit again (the costly stage once).
    train, test = cad.extract(train_hu), cad.extract(test_hu)
    again = CADDetector(n_estimators=30, random_state=0).fit_extracted(
        train, train_lesions
    )
    for first, second in zip(detections, again.score_extracted(test)):
        np.testing.assert_array_equal(first.points, second.points)
        np.testing.assert_array_equal(first.scores, second.scores)
    other = CADDetector(n_estimators=30, random_state=1).fit_extracted(
        train, train_lesions
    )
    assert any(
        not np.array_equal(a.scores, b.scores)
        for a, b in zip(detections, other.score_extracted(test))
    )


def test_fit_without_hits_and_a_bad_classifier_fail_with_one_line():
    hu = np.stack([_body(np.random.default_rng(5))] * 2)
    empty = [Lesions(np.zeros((0, 2)), np.zeros(0))] * 2
    with pytest.raises(ValueError, match="both hits and misses"):
        CADDetector(n_estimators=5).fit(hu, empty)
    with pytest.raises(ValueError, match="classifier: expected one of"):
        CADDetector(classifier="svm")
    with pytest.raises(RuntimeError, match="call fit"):
        CADDetector().detect(hu)


def test_3d_candidates_and_features_run_on_a_ball():
    # 3D: the same functions on a volume (GLCM on the axial slice).
    rng = np.random.default_rng(6)
    grid = np.indices((20, 20, 20))
    inside = sum(((g - 9.5) / 9) ** 2 for g in grid) <= 1
    hu = np.where(inside, 40.0, -1000.0) + rng.normal(0, 4, inside.shape)
    ball = sum((g - c) ** 2 for g, c in zip(grid, (10, 9, 11))) <= 9
    hu[ball] += 70
    found = blob_candidates(hu, radius_range=(2.0, 5.0), num_sigma=4)
    nearest = np.argmin(np.linalg.norm(found.points - (10, 9, 11), axis=1))
    assert np.linalg.norm(found.points[nearest] - (10, 9, 11)) < 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no qhull failure on one-voxel segments
        features = candidate_features(hu, found)
    assert features.shape == (len(found.points), len(FEATURE_NAMES))
    assert np.isfinite(features).all()
    assert features[nearest, FEATURE_NAMES.index("contrast_hu")] > 40
    # A one-voxel segment has no 3D convex hull (qhull fails loudly): solid.
    smooth = np.zeros((7, 7, 7))
    smooth[3, 3, 3] = 100.0
    distance = np.sqrt(sum((g - 3.0) ** 2 for g in np.indices(smooth.shape)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shape = cad_features._segment_shape(
            smooth, distance, np.array([3, 3, 3]), 1.0, 1.0, 100.0, 0.0
        )
    assert shape == (1.0, 0.0, 1.0, 0.0)  # area, eccentricity, solidity, offset


def test_window_maps_the_display_range_to_unit_interval():
    np.testing.assert_allclose(
        cad_features.window(np.array([-1000, -160, 40, 240, 900]), 40, 400),
        [0, 0, 0.5, 1, 1],
    )
