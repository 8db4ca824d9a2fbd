"""Transfer learning to a small set: scratch vs frozen feature extractor vs
fine-tuning, over seeds (see README.md in this folder).

    python experiments/transfer/run.py [--seeds 0 1 2] [--source runs/default]

The source model is the main job (``medjax-train``: cnn_small on 4000 CT phantom
slices, lesion vs healthy); it is trained first if ``--source`` holds no run.
Each variant is ``medjax-train experiment=transfer_mr`` (100 MR-like slices of
other patients) with the overrides below, evaluated on the 500 test slices at its
best validation checkpoint. Writes ``results.json``, ``auroc.png`` and
``curves.png`` here and prints the README's table.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runner import (  # noqa: E402
    arguments, bar_plot, mean_sd, run_variants, train, validation_curve,
)

VARIANTS = {
    "scratch": ("scratch", ["transfer.mode=scratch"]),
    "frozen": ("frozen features", ["transfer.mode=feature_extractor"]),
    "last2": ("fine-tune last 2 stages", ["transfer.mode=finetune",
                                          "transfer.trainable_stages=2"]),
    "finetune": ("fine-tune all", ["transfer.mode=finetune"]),
}
METRICS = ("auroc", "accuracy", "balanced_accuracy")


def main() -> None:
    parser = arguments(__doc__, "runs/transfer", VARIANTS)
    parser.add_argument("--source", default="runs/default")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.source, "summary.json")):
        train([], args.source)
    source = os.path.abspath(args.source)
    results = run_variants("transfer_mr", VARIANTS, args.variants, args.seeds, args.runs,
                           [f"transfer.checkpoint='{source}'"], METRICS)
    curves = {}
    for row in results:
        curves.setdefault(row["variant"], []).append(
            validation_curve(row["run_dir"], "auroc"))
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    names = {v: VARIANTS[v][0] for v in args.variants}
    bar_plot(results, names, METRICS[:2], os.path.join(HERE, "auroc.png"),
             "100 MR slices, CT-pretrained CNN")
    plot_curves(curves, names, os.path.join(HERE, "curves.png"))
    print("| start | test AUROC | test accuracy | balanced accuracy | per seed AUROC |")
    print("| --- | ---: | ---: | ---: | --- |")
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        print(f"| {name} | " + " | ".join(mean_sd([r[m] for r in rows]) for m in METRICS)
              + " | " + ", ".join(f"{r['auroc']:.3f}" for r in rows) + " |")


def plot_curves(curves, names, path):
    from medjax import viz  # noqa: F401  (sets the backend before pyplot)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for i, (variant, runs) in enumerate(curves.items()):
        steps = runs[0][0]
        values = np.array([values for _, values in runs])
        ax.plot(steps, values.mean(0), color=f"C{i}", label=names[variant])
        ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.15)
    ax.set_xlabel("step (20 images each)")
    ax.set_ylabel("validation AUROC")
    ax.set_title("100 MR slices: mean over seeds, band = min..max", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
