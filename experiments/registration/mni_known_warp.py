"""Known-warp recovery on a real brain: nilearn's MNI152 T1 (2 mm), deformed by
a random affine + smooth elastic field with the grey/white-matter labels and
landmarks moved along, registered back by medjax's iterative methods and by
SimpleITK, scored by GM/WM Dice, TRE, folding and SD log|J|.

    OMP_NUM_THREADS=1 python experiments/registration/mni_known_warp.py [--pairs 3]

Rows (``dataset: mni``) are appended to results.json.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from medjax.data.datasets import templates
from medjax.data.datasets.phantoms.registration_pairs import registration_pair
from medjax.inferers.registration import normalize
from medjax.metrics import registration as metrics
from medjax.tasks.registration import IterativeRegistration

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import simpleitk_baseline  # noqa: E402
from runner import append_row  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPACING = (2.0, 2.0, 2.0)
#: (name, stages): medjax's iterative methods, each stage started from the last.
MEDJAX = {
    "medjax affine (MI)": [
        IterativeRegistration("affine", "mi", levels=(4, 2, 1), iterations=(200, 100, 50),
                              learning_rate=0.5),
    ],
    "medjax affine + B-spline (MI)": [
        IterativeRegistration("affine", "mi", levels=(4, 2, 1), iterations=(200, 100, 50),
                              learning_rate=0.5),
        IterativeRegistration("bspline", "mi", levels=(2, 1), iterations=(100, 50),
                              learning_rate=0.2, grid_spacing=6, regularizer="bending",
                              regularization=0.05),
    ],
}


def make_pair(template: dict, labels: np.ndarray, seed: int) -> dict:
    t1 = normalize(template["t1"].array)[..., None]
    brain = np.argwhere(template["mask"].array > 0.5)
    rng = np.random.default_rng(seed)
    landmarks = brain[rng.choice(len(brain), 20, replace=False)].astype(np.float32)
    pair = registration_pair(
        jax.random.PRNGKey(seed), jnp.asarray(t1), masks={"labels": jnp.asarray(labels)},
        points=jnp.asarray(landmarks), max_rotation_degrees=8.0, max_translation=0.04,
        zoom_range=(0.95, 1.05), max_shear=0.03, elastic_sigma=8.0, elastic_magnitude=2.0,
    )
    return jax.tree.map(np.asarray, pair)


def score(pair: dict, displacement: np.ndarray, seconds: float) -> dict:
    d = jnp.asarray(displacement)[None]
    dice = np.asarray(metrics.label_dice(pair["fixed_labels"][None], pair["moving_labels"][None],
                                         d, 4))[0]
    tre = np.asarray(metrics.target_registration_error(
        d, pair["fixed_points"][None], pair["moving_points"][None], spacing=SPACING))[0]
    return {
        "dice_gm": float(dice[2]), "dice_wm": float(dice[3]),
        "tre_mm": float(np.nanmean(tre)),
        "folding_percent": 100 * float(metrics.folding_fraction(d)[0]),
        "sd_log_jacobian": float(metrics.std_log_jacobian(d)[0]),
        "seconds": seconds,
    }


def _stages(stages, fixed, moving):
    matrix, out = jnp.eye(4)[None], None
    for method in stages:
        out = jax.block_until_ready(method(fixed, moving, matrix, spacing=SPACING))
        matrix = out["matrix"]
    return out


def run_medjax(stages, pair) -> tuple[np.ndarray, float]:
    """The result and the seconds of a second, timed run: compiled once for
    these shapes, as a user registering many pairs would see it."""
    fixed, moving = jnp.asarray(pair["fixed"])[None], jnp.asarray(pair["moving"])[None]
    _stages(stages, fixed, moving)
    start = time.perf_counter()
    out = _stages(stages, fixed, moving)
    return np.asarray(out["displacement"][0]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()

    template = templates.mni152(2)
    labels = templates.tissue_labels(template)
    for seed in range(args.pairs):
        pair = make_pair(template, labels, seed)
        identity = score(pair, np.zeros(pair["fixed"].shape[:-1] + (3,), np.float32), 0.0)
        append_row(args.results, {"dataset": "mni", "method": "no registration",
                                  "pair": seed, **identity})
        print(f"pair {seed}: before {identity}", flush=True)
        for name, stages in MEDJAX.items():
            displacement, seconds = run_medjax(stages, pair)
            row = {"dataset": "mni", "method": name, "pair": seed,
                   **score(pair, displacement, seconds)}
            append_row(args.results, row)
            print(row, flush=True)
        for kind in ("affine", "bspline"):
            out = simpleitk_baseline.register(pair["fixed"][..., 0], pair["moving"][..., 0],
                                              transform=kind, spacing=SPACING, grid_spacing=6,
                                              seed=seed)
            row = {"dataset": "mni", "method": f"SimpleITK {kind} (Mattes MI)", "pair": seed,
                   **score(pair, out["displacement"], out["seconds"])}
            append_row(args.results, row)
            print(row, flush=True)


if __name__ == "__main__":
    main()
