"""Procedural CT-like phantoms, generated deterministically from a seed.

``torso_slice`` draws an axial slice of the upper abdomen at the level of the liver
and spleen, in radiological convention (patient's right on the image's left,
anterior at the top), in Hounsfield units: air, a body outline with subcutaneous
fat around muscle and soft tissue, posterior lung bases, liver, spleen, a vertebral
body with cortical rim, and the aorta. Anatomy varies in size, shape and pose
between cases; tissues carry smooth texture; the image has partial-volume blur and
quantum-like noise. Zero to three lesions are placed in the liver (hypo- or
hyper-dense) or the lungs (solid nodules), round or lobulated, from a few pixels up.

Each case is a function of ``(seed, split, index)`` alone, so a split can be
regenerated in any order, in parallel, and gives the same bytes every time.
"""

import zlib

import numpy as np
import scipy.ndimage as ndi

# Organ labels of ``organ_mask``; ``lesion_mask`` holds lesion instance ids 1..K.
ORGAN_LABELS = {
    "background": 0,
    "body": 1,
    "lung": 2,
    "liver": 3,
    "spleen": 4,
    "spine": 5,
    "aorta": 6,
}
MAX_LESIONS = 3
HU_MIN, HU_MAX = -1024, 3071


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one case: independent of every other case."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _ellipse(x, y, cx, cy, ax, ay, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = ((x - cx) * c + (y - cy) * s) / ax
    v = (-(x - cx) * s + (y - cy) * c) / ay
    return u * u + v * v <= 1.0


def _smooth_field(rng, shape, sigma_px, amplitude):
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return field * (amplitude / (field.std() + 1e-8))


def torso_slice(rng: np.random.Generator, image_size: int) -> dict[str, np.ndarray]:
    """One phantom slice.

    Returns:
        ``image [S, S]`` int16 HU; ``organ_mask [S, S]`` uint8 (ORGAN_LABELS);
        ``lesion_mask [S, S]`` uint8 instance ids; ``label`` 1 if any lesion is
        visible else 0.
    """
    size = image_size
    # Pixel centres in [-1, 1], then into the patient's frame (pose: rotation,
    # scale, shift), so anatomy is drawn in fixed coordinates.
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    py, px = np.meshgrid(grid, grid, indexing="ij")
    angle = rng.uniform(-0.15, 0.15)
    scale = rng.uniform(0.88, 1.05)
    shift = rng.uniform(-0.05, 0.05, size=2)
    c, s = np.cos(angle), np.sin(angle)
    x = (c * (px - shift[0]) + s * (py - shift[1])) / scale
    y = (-s * (px - shift[0]) + c * (py - shift[1])) / scale

    organs = np.zeros((size, size), np.uint8)
    hu = np.full((size, size), -1000.0)

    body_ax, body_ay = rng.uniform(0.80, 0.92), rng.uniform(0.56, 0.68)
    body = _ellipse(x, y, 0, 0.02, body_ax, body_ay)
    fat = rng.uniform(0.05, 0.13)
    inner = _ellipse(x, y, 0, 0.02, body_ax - fat, body_ay - fat)
    organs[body] = ORGAN_LABELS["body"]
    hu[body] = -100 + _smooth_field(rng, hu.shape, 1.5, 12)[body]
    hu[inner] = 40 + _smooth_field(rng, hu.shape, 1.5, 8)[inner]

    def paint(region, name, mean_hu, texture_hu):
        region = region & inner
        organs[region] = ORGAN_LABELS[name]
        hu[region] = mean_hu + _smooth_field(rng, hu.shape, 1.0, texture_hu)[region]
        return region

    liver_hu = rng.normal(100, 8)
    liver = paint(
        _ellipse(
            x, y, rng.uniform(-0.40, -0.30), rng.uniform(-0.10, 0.0),
            rng.uniform(0.32, 0.42), rng.uniform(0.30, 0.40), rng.uniform(-0.4, 0.2),
        ),
        "liver", liver_hu, 6,
    )
    paint(
        _ellipse(
            x, y, rng.uniform(0.45, 0.55), rng.uniform(0.05, 0.18),
            rng.uniform(0.10, 0.16), rng.uniform(0.15, 0.22), rng.uniform(-0.6, 0.0),
        ),
        "spleen", rng.normal(110, 8), 6,
    )
    lung_size = rng.uniform(0.4, 1.0)  # how far the slice is from the lung bases
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= _ellipse(
            x, y, side * rng.uniform(0.40, 0.50), rng.uniform(0.22, 0.30),
            0.22 * lung_size, 0.20 * lung_size, side * 0.3,
        )
    lungs = paint(lungs, "lung", -850, 25)
    liver &= organs == ORGAN_LABELS["liver"]
    spine_cy, spine_r = rng.uniform(0.36, 0.42), rng.uniform(0.10, 0.13)
    vertebra = paint(_ellipse(x, y, 0, spine_cy, spine_r, spine_r * 0.9), "spine", 250, 30)
    cortex = vertebra & ~_ellipse(x, y, 0, spine_cy, spine_r - 0.025, spine_r * 0.9 - 0.025)
    hu[cortex] = 700
    aorta_r = rng.uniform(0.045, 0.065)
    paint(
        _ellipse(x, y, rng.uniform(0.03, 0.09), spine_cy - spine_r - aorta_r - 0.01,
                 aorta_r, aorta_r),
        "aorta", rng.normal(170, 15), 4,
    )

    lesions = np.zeros((size, size), np.uint8)
    num_lesions = rng.choice(MAX_LESIONS + 1, p=[0.5, 0.2, 0.15, 0.15])
    for _ in range(num_lesions):
        in_lung = lungs.any() and rng.random() < 0.25
        organ = lungs if in_lung else liver
        radius = size * rng.uniform(0.03, 0.08)
        depth = ndi.distance_transform_edt(organ)
        candidates = np.argwhere(depth >= max(1.0, 0.6 * radius))
        if len(candidates) == 0:
            candidates = np.argwhere(organ)
        if len(candidates) == 0:
            continue
        cy, cx = candidates[rng.integers(len(candidates))]
        yy, xx = np.mgrid[0:size, 0:size]
        theta = np.arctan2(yy - cy, xx - cx)
        lobes = rng.integers(3, 6)
        lobulation = rng.uniform(0.0, 0.25)  # 0: round
        boundary = radius * (1 + lobulation * np.cos(lobes * theta + rng.uniform(0, 6.3)))
        if lesions[cy, cx]:
            continue  # centre taken by an earlier lesion: keep instances apart
        region = (np.hypot(yy - cy, xx - cx) <= boundary) & organ & (lesions == 0)
        region[cy, cx] = True
        pieces, _ = ndi.label(region)
        region = pieces == pieces[cy, cx]  # one connected instance
        lesions[region] = len(np.unique(lesions))  # ids 1, 2, ... without gaps
        if in_lung:
            lesion_hu = rng.uniform(-20, 60)
        else:
            contrast = rng.uniform(30, 60)
            lesion_hu = liver_hu + (contrast if rng.random() < 0.3 else -contrast)
        hu[region] = lesion_hu + _smooth_field(rng, hu.shape, 0.8, 5)[region]

    hu = ndi.gaussian_filter(hu, sigma=0.5 * size / 64)  # partial-volume blur
    hu += rng.normal(0, rng.uniform(8, 18), hu.shape)  # quantum noise
    return {
        "image": np.clip(np.round(hu), HU_MIN, HU_MAX).astype(np.int16),
        "organ_mask": organs,
        "lesion_mask": lesions,
        "label": np.int64(lesions.any()),
    }
