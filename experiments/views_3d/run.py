"""2D vs 2.5D vs 3D views for lesion-level classification in volumes: accuracy
and cost (see README.md in this folder).

    python experiments/views_3d/run.py [--seeds 0 1 2] [--steps 400]

Each variant is ``medjax-train experiment=lesion_25d`` (lesions of 64^3 phantom
volumes, 400 / 100 / 100 volumes) with the overrides below, evaluated on the test
split at its best validation checkpoint. Cost: parameters, forward FLOPs per
lesion from XLA's cost analysis of the compiled model, and training images/s on
this machine. Writes ``results.json`` and ``accuracy.png`` here and prints the
README's table.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runner import arguments, bar_plot, mean_sd, model_cost, run_variants  # noqa: E402

DATA: list[str] = []  # conf/data/phantoms_lesions3d.yaml: 400 / 100 / 100 volumes
VARIANTS = {
    "2d": ("2D: axial patch", ["task.views=[axial]", "model=cnn_small"]),
    "25d": ("2.5D: 3 planes", []),
    "25d_shared": ("2.5D, shared weights", ["model.shared_weights=true"]),
    "3d": ("3D: cube", ["task.views=[local]", "model=cnn_small", "model.spatial_dims=3"]),
}
METRICS = ("accuracy", "balanced_accuracy", "auroc")


def forward_flops(overrides: list[str]) -> float:
    """XLA's FLOP count of one lesion's forward pass (views and model)."""
    import numpy as np

    batch = {"image": np.zeros((1, 64, 64, 64, 1), np.float32),
             "lesion_center": np.full((1, 1, 3), 32.0, np.float32)}
    return model_cost(["experiment=lesion_25d", *overrides], batch)[1]


def main() -> None:
    args = arguments(__doc__, "runs/views_3d", VARIANTS, steps=400).parse_args()
    flops = {variant: forward_flops(VARIANTS[variant][1]) for variant in args.variants}
    results = run_variants("lesion_25d", VARIANTS, args.variants, args.seeds, args.runs,
                           [f"trainer.max_steps={args.steps}", *DATA], METRICS)
    for row in results:
        row["forward_flops"] = flops[row["variant"]]
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    names = {v: VARIANTS[v][0] for v in args.variants}
    bar_plot(results, names, METRICS, os.path.join(HERE, "accuracy.png"),
             "lesion type in 64^3 volumes from 8-voxel views")
    print("| views | parameters | forward MFLOP / lesion | train lesions/s | "
          "test accuracy | balanced accuracy | AUROC |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        speed = sum(r["train_images_per_second"] for r in rows) / len(rows)
        print(f"| {name} | {rows[0]['parameters']:,} | {rows[0]['forward_flops'] / 1e6:.1f} "
              f"| {speed:.0f} | " + " | ".join(mean_sd([r[m] for r in rows]) for m in METRICS)
              + " |")


if __name__ == "__main__":
    main()
