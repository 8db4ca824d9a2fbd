"""Does post-processing the maps help? The coarse-noise DAEs trained by
``run.py`` (``runs/anomaly_detection/coarse_dae_seed<k>``), their maps
median-filtered and/or stripped of small components before thresholding,
thresholds chosen on validation (see README.md in this folder).

    python experiments/anomaly_detection/postprocessing.py [--seeds 0 1 2]

Prints the README's table and writes ``postprocessing.json``.
"""

import argparse
import dataclasses
import json
import os

import run as study

from medjax.config import compose
from medjax.config.run import build_run
from medjax.engine import sharding
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.state import init_state

SETTINGS = [(0, 0), (3, 0), (5, 0), (0, 10), (5, 10)]  # (median size, min component)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", default="runs/anomaly_detection")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        overrides = ["experiment=anomaly_coarse_dae", f"seed={seed}"]
        task, model, tx, data, *_ = build_run(compose("train", overrides))
        run_dir = os.path.join(args.runs, f"coarse_dae_seed{seed}")
        state, step = restore_checkpoint(
            init_state(model, tx, data, task, sharding.data_mesh(), seed), run_dir, "latest")
        trained = study.Trained(task, model, state.variables(), data, 0.0, run_dir)
        arrays = {s: study.split_arrays(data, s) for s in ("validation", "test")}
        maps = {s: study.residual_maps(trained, a["image"]) for s, a in arrays.items()}
        for median, component in SETTINGS:
            variant = dataclasses.replace(task, median_filter=median, min_component=component)
            for region_name, region in study.REGIONS.items():
                validation = study.scores(variant, maps["validation"], arrays["validation"],
                                          region)
                test = study.scores(variant, maps["test"], arrays["test"], region,
                                    validation["best_dice_threshold"])
                rows.append({"seed": seed, "step": step, "median": median,
                             "min_component": component, "region": region_name, **test})
                print(f"seed {seed} median {median} components >= {component} "
                      f"{region_name}: pixel AUPRC {test['pixel_auprc']:.3f}, "
                      f"Dice {test['dice']:.3f}", flush=True)
    with open(os.path.join(study.HERE, "postprocessing.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("| median filter | components removed below | region | pixel AUPRC | Dice "
          "(val. threshold) |\n| ---: | ---: | --- | ---: | ---: |")
    for median, component in SETTINGS:
        for region_name in study.REGIONS:
            picked = [r for r in rows if (r["median"], r["min_component"], r["region"])
                      == (median, component, region_name)]
            print(f"| {median or '-'} | {component or '-'} | {region_name} | "
                  f"{study.mean_sd([r['pixel_auprc'] for r in picked])} | "
                  f"{study.mean_sd([r['dice'] for r in picked])} |")


if __name__ == "__main__":
    main()
