"""Procedural torso phantoms (CT-like and MR-like), 2D slices and 3D volumes.

The anatomy is one continuous 3D model of the upper abdomen in patient coordinates
(``x`` right-to-left, ``y`` anterior-to-posterior, ``z`` caudal-to-cranial, each
about [-1, 1]): a body outline with subcutaneous fat over a muscular body wall and
paraspinal muscles, the lung bases, liver, spleen, both kidneys, the lumbar spine
(vertebral bodies with cortical rims separated by discs, spinal canal, posterior
arch) and the aorta. ``torso_slice`` samples it on one axial plane, ``torso_volume``
on a grid of planes, so 2D and 3D cases share every detail.

Between cases the anatomy varies in organ size, shape, position and pose (rotation,
scale and shift in the axial plane). A tissue map is rendered to Hounsfield units
(CT) and, from the same tissues, to an MR-like T1-weighted contrast. Each tissue has
smooth texture; images get partial-volume blur, a smooth bias field and noise
(Gaussian in CT, Rician in MR).

Lesions (0 to ``max_lesions``) sit in the liver (hypo- or hyper-dense) or the lungs
(solid nodules), round or lobulated, from a few voxels up. Labels: the exam label,
a multi-class organ mask, a lesion mask of instance ids, lesion centres, radii and
types padded to ``max_lesions`` with a validity mask, and a fixed set of anatomical
landmarks with a validity mask.

Images are radiological convention: patient's right on the image's left (column 0),
anterior at the top (row 0); in volumes, the last axis runs caudal to cranial.
Each case is a function of ``(seed, split, index)`` alone.
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
    "kidney": 7,
}
LESION_TYPES = ("none", "liver_hypodense", "liver_hyperdense", "lung_nodule")
# Landmarks are the centroids of these convex structures (valid where present).
LANDMARKS = (
    "vertebral_body", "spinal_canal", "aorta", "right_kidney", "left_kidney", "spleen",
)
HU_MIN, HU_MAX = -1024, 3071

# Tissues of the tissue map, with CT (HU) and MR (T1-weighted, a.u.) intensities.
TISSUES = {
    #  name:            (id, CT HU, MR T1)
    "air": (0, -1000.0, 0.0),
    "fat": (1, -100.0, 950.0),
    "muscle": (2, 50.0, 330.0),
    "soft_tissue": (3, 30.0, 420.0),
    "lung": (4, -850.0, 40.0),
    "liver": (5, 100.0, 560.0),
    "spleen": (6, 110.0, 380.0),
    "kidney": (7, 160.0, 450.0),
    "cortical_bone": (8, 900.0, 60.0),
    "marrow": (9, 250.0, 700.0),
    "disc": (10, 80.0, 300.0),
    "csf": (11, 15.0, 150.0),
    "blood": (12, 170.0, 90.0),  # contrast-enhanced in CT, flow void in MR
}
TEXTURE = {"fat": 10, "muscle": 8, "soft_tissue": 10, "lung": 25, "liver": 6,
           "spleen": 6, "kidney": 10, "marrow": 30}  # std of texture, HU


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one case: independent of every other case."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _ellipsoid(p, center, axes, angle=0.0):
    """Inside an ellipsoid whose axial cross-section is rotated by ``angle``."""
    x, y, z = p
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - center[0], y - center[1]
    u = (c * dx + s * dy) / axes[0]
    v = (-s * dx + c * dy) / axes[1]
    w = (z - center[2]) / axes[2]
    return u * u + v * v + w * w <= 1.0


def _cylinder(p, center, axes):
    x, y, _ = p
    return ((x - center[0]) / axes[0]) ** 2 + ((y - center[1]) / axes[1]) ** 2 <= 1.0


def draw_anatomy(rng: np.random.Generator) -> dict:
    """Random anatomical parameters of one case (shared by its 2D and 3D renders)."""
    u = rng.uniform
    body = (u(0.80, 0.92), u(0.56, 0.68))
    fat = u(0.05, 0.12)
    # The spine sits just in front of the posterior body wall, with its arch and
    # canal behind the vertebral body.
    spine_r = u(0.09, 0.12)
    spine_y = 0.02 + body[1] - fat - u(0.04, 0.07) - 0.135 - spine_r
    return {
        "pose": (u(-0.15, 0.15), u(0.88, 1.05), u(-0.05, 0.05, 2)),
        "body": body,
        "fat": fat,
        "wall": u(0.04, 0.07),
        "liver": ((u(-0.40, -0.30), u(-0.10, 0.0), u(0.05, 0.25)),
                  (u(0.32, 0.42), u(0.30, 0.40), u(0.55, 0.75)), u(-0.4, 0.2)),
        "spleen": ((u(0.45, 0.55), u(0.05, 0.18), u(0.15, 0.35)),
                   (u(0.10, 0.16), u(0.15, 0.22), u(0.25, 0.40)), u(-0.6, 0.0)),
        "lungs": [((side * u(0.40, 0.50), u(0.22, 0.30), u(0.60, 0.80)),
                   (0.22, 0.20, u(0.50, 0.70)), side * 0.3) for side in (-1, 1)],
        "kidneys": [((side * u(0.26, 0.32), u(0.30, 0.38), u(-0.55, -0.25)),
                     (u(0.09, 0.12), u(0.12, 0.15), u(0.30, 0.40)), side * u(0.3, 0.6))
                    for side in (-1, 1)],
        "spine": (spine_y, spine_r, u(0.22, 0.30), u(0.0, 1.0)),  # y, radius, period, phase
        "aorta": (u(0.03, 0.09), spine_y - spine_r - 0.065, u(0.045, 0.065)),
        "paraspinal": u(0.10, 0.14),
        "liver_hu": rng.normal(100, 8),
    }


def _patient_coordinates(anatomy, coords):
    """Maps image-plane coordinates to patient coordinates (undoing the pose)."""
    angle, scale, shift = anatomy["pose"]
    x, y, z = coords
    c, s = np.cos(angle), np.sin(angle)
    xs, ys = x - shift[0], y - shift[1]
    return ((c * xs + s * ys) / scale, (-s * xs + c * ys) / scale, z)


def _tissue_map(anatomy, p):
    """Tissue ids and organ labels at patient coordinates ``p``."""
    t = {name: value[0] for name, value in TISSUES.items()}
    shape = np.broadcast(*p).shape
    tissue = np.full(shape, t["air"], np.uint8)
    organs = np.zeros(shape, np.uint8)
    ax, ay = anatomy["body"]
    body = _cylinder(p, (0, 0.02), (ax, ay))
    fat_in = ax - anatomy["fat"], ay - anatomy["fat"]
    inner = _cylinder(p, (0, 0.02), fat_in)
    cavity = _cylinder(p, (0, 0.02), (fat_in[0] - anatomy["wall"], fat_in[1] - anatomy["wall"]))
    tissue[body] = t["fat"]
    tissue[inner] = t["muscle"]
    tissue[cavity] = t["soft_tissue"]
    organs[body] = ORGAN_LABELS["body"]

    def paint(region, name, organ=None):
        region = region & inner
        tissue[region] = t[name]
        if organ:
            organs[region] = ORGAN_LABELS[organ]
        return region

    spine_y, spine_r, period, phase = anatomy["spine"]
    for side in (-1, 1):  # paraspinal muscles beside the posterior arch
        paint(_cylinder(p, (side * (spine_r + 0.04), spine_y + spine_r + 0.08),
                        (anatomy["paraspinal"], 0.09)), "muscle")
    # Lung bases first: the solid organs below the diaphragm displace them.
    lungs = np.zeros(shape, bool)
    for lung in anatomy["lungs"]:
        lungs |= _ellipsoid(p, *lung)
    paint(lungs, "lung", "lung")
    liver = paint(_ellipsoid(p, *anatomy["liver"]), "liver", "liver")
    paint(_ellipsoid(p, *anatomy["spleen"]), "spleen", "spleen")
    for kidney in anatomy["kidneys"]:
        paint(_ellipsoid(p, *kidney), "kidney", "kidney")
    # Vertebral bodies (marrow inside a cortical rim) separated by discs along z.
    vertebra = _cylinder(p, (0, spine_y), (spine_r, spine_r * 0.9))
    rim = vertebra & ~_cylinder(p, (0, spine_y), (spine_r - 0.025, spine_r * 0.9 - 0.025))
    disc = np.broadcast_to(((p[2] / period + phase) % 1.0) < 0.18, shape)
    paint(vertebra, "marrow", "spine")
    tissue[rim & inner & ~disc] = t["cortical_bone"]
    tissue[vertebra & inner & disc] = t["disc"]
    arch_y = spine_y + spine_r + 0.055
    arch = _cylinder(p, (0, arch_y), (0.075, 0.06))
    paint(arch, "cortical_bone", "spine")
    paint(_cylinder(p, (0, arch_y), (0.045, 0.035)), "csf", "spine")
    ax_, ay_, ar = anatomy["aorta"]
    paint(_cylinder(p, (ax_, ay_), (ar, ar)), "blood", "aorta")
    return tissue, organs, liver & (organs == ORGAN_LABELS["liver"]), lungs & (
        organs == ORGAN_LABELS["lung"])


def _smooth_field(rng, shape, sigma_px, amplitude):
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px)
    return field * (amplitude / (field.std() + 1e-8))


def _place_lesions(rng, size, liver, lungs, max_lesions):
    """Lesion instance map and per-lesion centre, radius and type."""
    lesions = np.zeros(liver.shape, np.uint8)
    found = []
    count = rng.choice(max_lesions + 1, p=_lesion_count_probabilities(max_lesions))
    grids = np.indices(liver.shape)
    for _ in range(count):
        in_lung = lungs.any() and rng.random() < 0.25
        organ = lungs if in_lung else liver
        radius = size * rng.uniform(0.03, 0.09)
        depth = ndi.distance_transform_edt(organ)
        candidates = np.argwhere(depth >= max(1.0, 0.6 * radius))
        if len(candidates) == 0:
            candidates = np.argwhere(organ)
        if len(candidates) == 0:
            continue
        center = candidates[rng.integers(len(candidates))]
        if lesions[tuple(center)]:
            continue  # centre taken by an earlier lesion: keep instances apart
        offsets = [np.zeros(len(center))]
        radii = [radius]
        if rng.random() < 0.5:  # lobulated: satellite lobes around a core
            radii = [0.8 * radius]
            for _ in range(rng.integers(2, 5)):
                direction = rng.normal(size=len(center))
                offsets.append(0.6 * radius * direction / np.linalg.norm(direction))
                radii.append(radius * rng.uniform(0.4, 0.6))
        region = np.zeros(liver.shape, bool)
        for offset, r in zip(offsets, radii):
            distance = sum((g - (c + o)) ** 2 for g, c, o in zip(grids, center, offset))
            region |= distance <= r * r
        region &= organ & (lesions == 0)
        region[tuple(center)] = True
        pieces, _ = ndi.label(region)
        region = pieces == pieces[tuple(center)]  # one connected instance
        if in_lung:
            kind = LESION_TYPES.index("lung_nodule")
        else:
            kind = LESION_TYPES.index("liver_hyperdense" if rng.random() < 0.3
                                      else "liver_hypodense")
        lesions[region] = len(found) + 1
        volume = region.sum()
        equivalent_radius = (np.sqrt(volume / np.pi) if region.ndim == 2
                             else np.cbrt(3 * volume / (4 * np.pi)))
        found.append((center.astype(np.float32), float(equivalent_radius), kind))
    return lesions, found


def _lesion_count_probabilities(max_lesions):
    # Half the cases are healthy; the rest have 1..max_lesions lesions, fewer likelier.
    weights = 1.0 / np.arange(1, max_lesions + 1)
    return np.concatenate([[0.5], 0.5 * weights / weights.sum()])


def _landmarks(anatomy, organs, tissue, coords_patient):
    """Centroids of LANDMARKS in voxel coordinates, and which are present."""
    t = {name: value[0] for name, value in TISSUES.items()}
    spine_y, spine_r, _, _ = anatomy["spine"]
    x, y, _ = coords_patient
    spine = organs == ORGAN_LABELS["spine"]
    kidney = organs == ORGAN_LABELS["kidney"]
    regions = {
        "vertebral_body": spine & (np.broadcast_to(y, spine.shape) < spine_y + spine_r)
        & (tissue != t["csf"]),
        "spinal_canal": tissue == t["csf"],
        "aorta": organs == ORGAN_LABELS["aorta"],
        "right_kidney": kidney & (np.broadcast_to(x, kidney.shape) < 0),
        "left_kidney": kidney & (np.broadcast_to(x, kidney.shape) > 0),
        "spleen": organs == ORGAN_LABELS["spleen"],
    }
    ndim = organs.ndim
    points = np.zeros((len(LANDMARKS), ndim), np.float32)
    valid = np.zeros(len(LANDMARKS), bool)
    for i, name in enumerate(LANDMARKS):
        if regions[name].sum() >= 3:
            points[i] = ndi.center_of_mass(regions[name])
            valid[i] = True
    return points, valid


def _render(rng, anatomy, tissue, lesions, found, size):
    """CT (HU) and MR images of a tissue map with lesions painted in."""
    shape = tissue.shape
    ct = np.zeros(shape)
    mr = np.zeros(shape)
    for name, (tissue_id, hu, t1) in TISSUES.items():
        region = tissue == tissue_id
        if not region.any():
            continue
        if name == "liver":
            hu = anatomy["liver_hu"]
        texture = _smooth_field(rng, shape, 1.0, TEXTURE.get(name, 4))[region]
        ct[region] = hu + texture
        mr[region] = t1 * (1 + texture / 300)
    for lesion_id, (_, _, kind) in enumerate(found, start=1):
        region = lesions == lesion_id
        texture = _smooth_field(rng, shape, 0.8, 5)[region]
        if LESION_TYPES[kind] == "lung_nodule":
            ct[region] = rng.uniform(-30, 60) + texture
            mr[region] = rng.uniform(250, 400) * (1 + texture / 300)
        else:
            contrast = rng.uniform(30, 70)
            sign = 1 if LESION_TYPES[kind] == "liver_hyperdense" else -1
            ct[region] = anatomy["liver_hu"] + sign * contrast + texture
            mr[region] = TISSUES["liver"][2] * (1 + sign * contrast / 150) * (
                1 + texture / 300)
    blur = 0.5 * size / 64  # partial-volume blur: about half a pixel at 64 px
    ct = ndi.gaussian_filter(ct, blur)
    mr = ndi.gaussian_filter(mr, blur)
    smooth = size / 4
    ct += _smooth_field(rng, shape, smooth, rng.uniform(3, 10))  # low-frequency shading
    mr *= 1 + _smooth_field(rng, shape, smooth, rng.uniform(0.05, 0.15))  # coil bias
    ct += rng.normal(0, rng.uniform(8, 18), shape)
    sigma = rng.uniform(10, 25)  # Rician noise: magnitude of a complex signal
    mr = np.hypot(mr + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return (np.clip(np.round(ct), HU_MIN, HU_MAX).astype(np.int16),
            np.clip(np.round(mr), 0, 4095).astype(np.int16))


def _torso(rng, image_size, depth, max_lesions, slice_z=None):
    anatomy = draw_anatomy(rng)
    grid = (np.arange(image_size) + 0.5) / image_size * 2 - 1
    if depth is None:
        z = rng.uniform(-0.3, 0.35) if slice_z is None else slice_z
        y, x = np.meshgrid(grid, grid, indexing="ij")
        coords = (x, y, np.full_like(x, z))
    else:
        zs = ((np.arange(depth) + 0.5) / depth * 2 - 1) * 0.7 + rng.uniform(-0.05, 0.05)
        y, x, z = np.meshgrid(grid, grid, zs, indexing="ij")
        coords = (x, y, z)
    patient = _patient_coordinates(anatomy, coords)
    tissue, organs, liver, lungs = _tissue_map(anatomy, patient)
    lesions, found = _place_lesions(rng, image_size, liver, lungs, max_lesions)
    landmarks, landmarks_valid = _landmarks(anatomy, organs, tissue, patient)
    ct, mr = _render(rng, anatomy, tissue, lesions, found, image_size)
    ndim = organs.ndim
    centers = np.zeros((max_lesions, ndim), np.float32)
    radii = np.zeros(max_lesions, np.float32)
    types = np.zeros(max_lesions, np.int64)
    for i, (center, radius, kind) in enumerate(found):
        centers[i], radii[i], types[i] = center, radius, kind
    largest = types[np.argmax(radii)] if found else 0
    return {
        "image": ct,
        "mr_image": mr,
        "organ_mask": organs,
        "lesion_mask": lesions,
        "label": np.int64(len(found) > 0),
        "lesion_type": np.int64(largest),
        "lesion_centers": centers,
        "lesion_radii": radii,
        "lesion_types": types,
        "lesion_valid": np.arange(max_lesions) < len(found),
        "landmarks": landmarks,
        "landmarks_valid": landmarks_valid,
    }


def torso_slice(
    rng: np.random.Generator, image_size: int, max_lesions: int = 3
) -> dict[str, np.ndarray]:
    """One axial slice at a random level between the kidneys and the lung bases.

    Returns:
        ``image [S, S]`` int16 HU; ``mr_image [S, S]`` int16 MR-like T1 (a.u.);
        ``organ_mask [S, S]`` uint8 (ORGAN_LABELS); ``lesion_mask [S, S]`` uint8
        instance ids; ``label`` 1 if any lesion; ``lesion_type`` of the largest
        lesion (LESION_TYPES); ``lesion_centers [K, 2]`` (row, col) voxel
        coordinates, ``lesion_radii [K]`` equivalent radii in pixels,
        ``lesion_types [K]``, ``lesion_valid [K]``; ``landmarks [L, 2]`` and
        ``landmarks_valid [L]`` (LANDMARKS). K is ``max_lesions``.
    """
    return _torso(rng, image_size, None, max_lesions)


def torso_volume(
    rng: np.random.Generator, image_size: int, depth: int | None = None,
    max_lesions: int = 5,
) -> dict[str, np.ndarray]:
    """A volume ``[S, S, D]`` (D = ``depth``, default S) from below the kidneys to
    the lung bases; the same fields as ``torso_slice`` with 3D coordinates
    (row, col, slice)."""
    return _torso(rng, image_size, depth or image_size, max_lesions)
