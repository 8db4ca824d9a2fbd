"""The first two stages of the classical CAD pipeline, on the host (numpy,
scipy, scikit-image): blob candidates inside the body, and hand-crafted
features per candidate. ``medjax.tasks.detection.cad`` adds the classifier.

Images are CT in Hounsfield units, 2D ``[H, W]`` or 3D ``[D, H, W]``; points
are voxel coordinates in array-axis order, as the phantoms' ``lesion_centers``.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import graycomatrix, graycoprops, peak_local_max
from skimage.measure import label, regionprops

FEATURE_NAMES = (
    "polarity",  # +1 bright blob, -1 dark blob
    "blob_radius",  # sqrt(ndim) * sigma of the LoG scale
    "log_response",  # scale-normalised LoG at the point, signed to be > 0
    "mean_hu",  # in the blob's disc
    "sd_hu",
    "ring_mean_hu",  # in the ring around it
    "ring_sd_hu",
    "contrast_hu",  # mean - ring mean
    "contrast_to_noise",  # contrast / ring sd
    "segment_area",  # voxels of the local threshold segmentation
    "segment_eccentricity",
    "segment_solidity",
    "segment_offset",  # centroid of the segment to the point, voxels
    "glcm_contrast",
    "glcm_homogeneity",
    "glcm_energy",
    "glcm_correlation",
    "context_median_hu",  # the tissue around: liver, lung, fat, muscle ...
    "ring_air_fraction",  # ring voxels below -500 HU: a blob by the lung
    "body_depth",  # distance to the body's outline, voxels
)
GLCM_LEVELS = 16
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")


@dataclass(frozen=True)
class Candidates:
    """Blob candidates of one image.

    Attributes:
        points: ``[K, ndim]`` voxel coordinates.
        radii: ``[K]`` blob radius, ``sqrt(ndim) * sigma`` (the radius at
            which the LoG of a disc or ball peaks).
        polarity: ``[K]`` +1 bright, -1 dark.
        response: ``[K]`` scale-normalised LoG response, > 0.
    """

    points: np.ndarray
    radii: np.ndarray
    polarity: np.ndarray
    response: np.ndarray


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """HU clipped to ``center -+ width / 2`` and mapped to [0, 1] (the display
    range blob detection sees: lung and bone saturate)."""
    low = center - width / 2
    return np.clip((np.asarray(hu, np.float32) - low) / width, 0.0, 1.0)


def body_mask(hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    """The patient: the largest component above ``threshold_hu`` with its holes
    (lungs, bowel gas) filled. ``[*S]`` bool."""
    tissue = np.asarray(hu) > threshold_hu
    pieces, count = ndi.label(tissue)
    if count == 0:
        return tissue
    largest = 1 + np.argmax(np.bincount(pieces.ravel())[1:])
    return ndi.binary_fill_holes(pieces == largest)


def blob_candidates(
    hu: np.ndarray,
    *,
    radius_range: tuple[float, float] = (1.4, 6.4),
    num_sigma: int = 12,
    threshold: float = 0.02,
    window_center: float = 40.0,
    window_width: float = 400.0,
    body: np.ndarray | None = None,
    dedup_distance: float = 2.0,
) -> Candidates:
    """Bright and dark LoG blobs of the windowed image inside the body.

    ``log_blobs`` (``skimage.feature.blob_log`` without its overlap pruning,
    which would drop a small lesion next to a larger blob) runs on the windowed
    image, the air around the body set to the body's median (bright:
    hyperdense lesions, lung nodules) and on its negative (dark: hypodense
    lesions). Candidates are then deduplicated across scales and polarities,
    strongest response first, within ``dedup_distance`` voxels.

    Args:
        hu: ``[*S]`` CT in HU, 2D or 3D.
        radius_range: smallest and largest lesion radius, voxels; the sigmas
            are these over ``sqrt(ndim)``.
        num_sigma: scales between them.
        threshold: ``blob_log``'s absolute threshold on the windowed [0, 1]
            image (0.02 is 8 HU of LoG response at W400: flat 6 HU noise gives
            almost none, the phantoms' faintest lesions still pass).
        window_center, window_width: the display window, HU.
        body: ``[*S]`` bool, default ``body_mask(hu)``.
        dedup_distance: voxels.

    Returns:
        ``Candidates``, strongest first.
    """
    ndim = hu.ndim
    image = window(hu, window_center, window_width)
    body = body_mask(hu) if body is None else body
    # Air outside the body becomes the body's median, so that the skin line
    # (a step of the whole window) gives no blobs; the lungs stay as they are.
    image = np.where(body, image, np.median(image[body]) if body.any() else 0.0)
    sigmas = np.asarray(radius_range) / math.sqrt(ndim)
    found = []
    for polarity, signal in ((1.0, image), (-1.0, 1.0 - image)):
        points, sigma, response = log_blobs(signal, sigmas, num_sigma, threshold)
        inside = body[tuple(points.T)]
        found.append(
            (points[inside], sigma[inside], np.full(inside.sum(), polarity), response[inside])
        )
    points, sigma, polarity, response = (np.concatenate(a) for a in zip(*found))
    keep = _dedup(points, response, dedup_distance)
    return Candidates(
        points=points[keep].astype(np.float64),
        radii=sigma[keep] * math.sqrt(ndim),
        polarity=polarity[keep],
        response=response[keep],
    )


def log_blobs(
    image: np.ndarray, sigma_range, num_sigma: int, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The maxima of the scale-normalised LoG scale space, as
    ``skimage.feature.blob_log(image, *sigma_range, num_sigma, threshold,
    exclude_border=1)`` finds them before its overlap pruning. That pruning
    tests every pair of nearby blobs in Python even at ``overlap=1`` (where it
    removes none): 45 s for the thousands of raw maxima of one 32^3 phantom volume.
    The response at each maximum comes with it.

    Returns:
        ``(points [K, ndim] int, sigma [K], response [K])`` in ``blob_log``'s order.
    """
    image = np.asarray(image, np.float32 if image.dtype == np.float32 else np.float64)
    sigmas = np.linspace(sigma_range[0], sigma_range[1], num_sigma)
    cube = np.empty(image.shape + (num_sigma,), image.dtype)
    for i, s in enumerate(sigmas):
        cube[..., i] = -ndi.gaussian_laplace(image, s) * s**2
    peaks = peak_local_max(
        cube,
        threshold_abs=threshold,
        threshold_rel=None,
        exclude_border=(1,) * image.ndim + (0,),
        footprint=np.ones((3,) * cube.ndim),
    )
    return peaks[:, :-1], sigmas[peaks[:, -1]], cube[tuple(peaks.T)]


def _dedup(points: np.ndarray, response: np.ndarray, distance: float) -> np.ndarray:
    """Greedy point NMS on the host (a few hundred points: numpy beats a jitted
    box NMS's compile): indices kept, strongest first."""
    order = np.argsort(-response, kind="stable")
    points = points[order]
    close = ((points[:, None] - points[None]) ** 2).sum(-1) < distance**2
    alive = np.ones(len(points), bool)
    for i in range(len(points)):
        if alive[i]:
            alive[i + 1 :] &= ~close[i, i + 1 :]
    return order[alive]


def candidate_features(
    hu: np.ndarray,
    candidates: Candidates,
    *,
    window_center: float = 40.0,
    window_width: float = 400.0,
    body: np.ndarray | None = None,
) -> np.ndarray:
    """Hand-crafted features of each candidate (``FEATURE_NAMES``).

    The blob is the disc (ball) of the blob radius ``r`` around the point; its
    ring the voxels at ``r + 1`` to ``2r + 2`` inside the body; the context the
    shell at ``2r + 2`` to ``3r + 6``. The shape comes from thresholding a
    lightly smoothed patch halfway between the blob's and the ring's mean
    (above for bright, below for dark blobs) and keeping the component at (or
    nearest to) the point. The GLCM is of the windowed patch of half-width
    ``max(4, 1.5 r)`` quantised to 16 levels, distance 1, four directions
    (in 3D: the axial slice through the point), averaged over directions.

    Args:
        hu: ``[*S]`` CT in HU.
        candidates: from ``blob_candidates``.
        window_center, window_width: the display window of the GLCM patch.
        body: ``[*S]`` bool, default ``body_mask(hu)``.

    Returns:
        ``[K, len(FEATURE_NAMES)]`` float64, finite.
    """
    hu = np.asarray(hu, np.float64)
    body = body_mask(hu) if body is None else body
    # Padded: a body cut by the image border ends there.
    depth = ndi.distance_transform_edt(np.pad(body, 1))[(slice(1, -1),) * body.ndim]
    smooth = ndi.gaussian_filter(hu, 0.5)  # of the shape's threshold segmentation
    levels = np.minimum(
        (window(hu, window_center, window_width) * GLCM_LEVELS).astype(np.uint8),
        GLCM_LEVELS - 1,
    )
    rows = [
        _features_at(hu, smooth, levels, body, depth, point, radius, polarity, response)
        for point, radius, polarity, response in zip(
            candidates.points,
            candidates.radii,
            candidates.polarity,
            candidates.response,
        )
    ]
    features = np.asarray(rows, np.float64).reshape(-1, len(FEATURE_NAMES))
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


def _patch(array: np.ndarray, centre: np.ndarray, half: int) -> tuple:
    """Index of the box of half-width ``half`` around ``centre``, clipped to the
    array, and the centre's position inside it."""
    low = np.maximum(centre - half, 0)
    high = np.minimum(centre + half + 1, array.shape)
    return tuple(slice(a, b) for a, b in zip(low, high)), centre - low


def _features_at(hu, smooth, levels, body, depth, point, radius, polarity, response):
    centre = np.rint(point).astype(int)
    centre = np.clip(centre, 0, np.asarray(hu.shape) - 1)
    outer = math.ceil(3 * radius + 6)
    box, at = _patch(hu, centre, outer)
    patch, inside = hu[box], body[box]
    grids = np.indices(patch.shape)
    distance = np.sqrt(sum((g - p) ** 2 for g, p in zip(grids, point - (centre - at))))
    disc = distance <= max(radius, 1.0)
    ring = (distance > radius + 1) & (distance <= 2 * radius + 2) & inside
    shell = (distance > 2 * radius + 2) & (distance <= 3 * radius + 6) & inside
    mean, sd = patch[disc].mean(), patch[disc].std()
    ring_values = patch[ring] if ring.any() else patch[~disc]
    ring_mean, ring_sd = ring_values.mean(), ring_values.std()
    contrast = mean - ring_mean
    context = np.median(patch[shell]) if shell.any() else ring_mean
    air = float((ring_values < -500).mean())
    shape = _segment_shape(smooth[box], distance, at, radius, polarity, mean, ring_mean)
    texture = _glcm(levels, centre, max(4, math.ceil(1.5 * radius)))
    return (
        polarity,
        radius,
        response,
        mean,
        sd,
        ring_mean,
        ring_sd,
        contrast,
        contrast / (ring_sd + 1.0),
        *shape,
        *texture,
        context,
        air,
        depth[tuple(centre)],
    )


def _segment_shape(smooth, distance, at, radius, polarity, mean, ring_mean):
    """Area, eccentricity, solidity and centroid offset of the local threshold
    segment; zeros when nothing passes the threshold."""
    local = distance <= 2 * radius + 2
    level = (mean + ring_mean) / 2
    region = (smooth > level if polarity > 0 else smooth < level) & local
    pieces = label(region)
    if pieces.max() == 0:
        return 0.0, 0.0, 0.0, 0.0
    piece = pieces[tuple(at)]
    if piece == 0:  # the point misses the segment: take the nearest piece
        piece = pieces[
            np.unravel_index(
                np.argmin(np.where(region, distance, np.inf)), region.shape
            )
        ]
    segment = pieces == piece
    (props,) = regionprops(segment.astype(np.uint8))
    # regionprops' eccentricity, sqrt(1 - l_min / l_max) of its inertia tensor
    # (the coordinates' covariance), from the covariance directly: a third of
    # the cost, and defined in 3D too.
    coords = np.argwhere(segment).astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(np.cov(coords.T, bias=True).reshape(len(at), -1))
    largest = eigenvalues[-1]
    eccentricity = (
        math.sqrt(max(0.0, 1 - eigenvalues[0] / largest)) if largest > 0 else 0.0
    )
    offset = float(np.linalg.norm(coords.mean(0) - at))
    # A 3D segment without volume (a voxel, a line, a plane) has no convex hull:
    # regionprops warns and returns an empty one. Such a segment is its own hull.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hull = float(props.area_convex)
    solidity = float(props.area) / hull if hull > 0 else 1.0
    return float(props.area), eccentricity, solidity, offset


def _glcm(levels, centre, half):
    """GLCM contrast, homogeneity, energy and correlation of the patch."""
    if levels.ndim == 3:  # the axial slice through the point
        levels, centre = levels[centre[0]], centre[1:]
    box, _ = _patch(levels, centre, half)
    patch = levels[box]
    matrix = graycomatrix(
        patch,
        distances=[1],
        angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
        levels=GLCM_LEVELS,
        symmetric=True,
        normed=True,
    )
    return tuple(float(graycoprops(matrix, p).mean()) for p in GLCM_PROPS)
