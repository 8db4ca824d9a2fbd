"""Procedural cine MR of a beating left ventricle (short-axis, bSSFP-like).

A mid-ventricular short-axis slice over ``T`` frames of one cardiac cycle,
starting at end-diastole: the bright left-ventricular blood pool inside a dark
myocardial ring, the right ventricle as a crescent beside it, surrounded by
epicardial fat, lung and chest wall. The cavity contracts to end-systole and
relaxes again; the myocardium thickens as it contracts (its area is conserved).

Normal hearts have an ejection fraction of 55-70 % and every wall segment moves.
Abnormal ones either have a reduced ejection fraction (25-45 %) or a hypokinetic
segment (a 60-120 degree sector that moves at 0-30 % of the rest), or both.
The ejection fraction is computed from the cavity as a prolate ventricle whose
long axis shortens with its radius, ``EF = 1 - (A_ES / A_ED) ** 1.5`` from the
areas ``A`` of the cavity mask at end-diastole and end-systole.
"""

import numpy as np
import scipy.ndimage as ndi

CINE_LABELS = {"background": 0, "lv_cavity": 1, "myocardium": 2, "rv_cavity": 3}


def ejection_fraction(cavity_areas: np.ndarray) -> float:
    """EF from the cavity area of every frame (frame 0 is end-diastole)."""
    diastole, systole = cavity_areas.max(), cavity_areas.min()
    return float(1 - (systole / diastole) ** 1.5)


def beating_heart(
    rng: np.random.Generator, image_size: int = 64, num_frames: int = 16
) -> dict[str, np.ndarray]:
    """One cine case.

    Returns:
        ``image [T, S, S]`` int16 MR intensities (a.u.); ``mask [T, S, S]`` uint8
        (CINE_LABELS); ``ejection_fraction`` float32 in [0, 1] (from the masks);
        ``label`` 0 normal, 1 abnormal motion.
    """
    size = image_size
    abnormal = rng.random() < 0.5
    reduced_ef = abnormal and rng.random() < 0.6
    hypokinetic = abnormal and (not reduced_ef or rng.random() < 0.5)
    target_ef = rng.uniform(0.25, 0.45) if reduced_ef else rng.uniform(0.55, 0.70)
    # Cavity radius at end-systole from the target EF: (r_es / r_ed) ** 3 = 1 - EF.
    r_ed = size * rng.uniform(0.14, 0.19)
    r_es = r_ed * (1 - target_ef) ** (1 / 3)
    wall_ed = size * rng.uniform(0.05, 0.07)
    center = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    angle0 = rng.uniform(0, 2 * np.pi)
    sector_center = rng.uniform(0, 2 * np.pi)
    sector_width = np.deg2rad(rng.uniform(60, 120))
    sector_motion = rng.uniform(0.0, 0.3)

    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = yy - center[0], xx - center[1]
    radius = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    in_sector = np.abs(np.angle(np.exp(1j * (theta - sector_center)))) < sector_width / 2
    rv_center = center + size * 0.28 * np.array([np.sin(angle0), np.cos(angle0)])
    body = ((yy - size / 2) / (0.47 * size)) ** 2 + ((xx - size / 2) / (0.47 * size)) ** 2 <= 1

    images, masks = [], []
    texture = ndi.gaussian_filter(rng.standard_normal((size, size)), 1.5) * 25
    for frame in range(num_frames):
        phase = 0.5 - 0.5 * np.cos(2 * np.pi * frame / num_frames)  # 0 at ED, 1 at ES
        r_cavity = r_ed - (r_ed - r_es) * phase
        if hypokinetic:
            r_cavity = np.where(in_sector, r_ed - (r_ed - r_cavity) * sector_motion, r_cavity)
        # The myocardium conserves its area: r_epi**2 - r_cavity**2 is constant.
        r_epi = np.sqrt(r_cavity**2 + (r_ed + wall_ed) ** 2 - r_ed**2)
        cavity = radius <= r_cavity
        myocardium = (radius <= r_epi) & ~cavity
        rv_radius = size * 0.17 * (1 - 0.25 * phase)
        rv = (np.hypot(yy - rv_center[0], xx - rv_center[1]) <= rv_radius) & ~(radius <= r_epi + 1)
        mask = np.zeros((size, size), np.uint8)
        mask[cavity] = CINE_LABELS["lv_cavity"]
        mask[myocardium] = CINE_LABELS["myocardium"]
        mask[rv] = CINE_LABELS["rv_cavity"]
        image = np.where(body, 300.0, 0.0) + texture * body  # chest wall and lung mix
        image[radius <= r_epi + 0.06 * size] = 650  # epicardial fat: bright in bSSFP
        image[myocardium] = 180
        image[cavity | rv] = 900
        image = ndi.gaussian_filter(image, 0.6 * size / 64)
        noise = rng.uniform(12, 25)
        image = np.hypot(image + rng.normal(0, noise, image.shape), rng.normal(0, noise, image.shape))
        images.append(np.clip(np.round(image), 0, 4095).astype(np.int16))
        masks.append(mask)
    masks = np.stack(masks)
    areas = (masks == CINE_LABELS["lv_cavity"]).sum(axis=(1, 2)).astype(float)
    return {
        "image": np.stack(images),
        "mask": masks,
        "ejection_fraction": np.float32(ejection_fraction(areas)),
        "label": np.int64(abnormal),
    }
