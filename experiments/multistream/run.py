"""Multi-scale multistream CNN against single-stream CNNs for lesion-level
classification (see README.md in this folder).

    python experiments/multistream/run.py [--seeds 0 1 2] [--steps 800]

Each variant is ``medjax-train experiment=lesion_multistream`` with the overrides
below, trained in ``runs/multistream/<variant>_seed<k>/`` and evaluated on the
test split at its best validation checkpoint (``medjax-eval``). Writes
``results.json`` and ``accuracy.png`` here and prints the README's table.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runner import arguments, bar_plot, mean_sd, run_variants  # noqa: E402

VARIANTS = {
    "local": ("local patch only", ["task.views=[local]", "model=cnn_small"]),
    "context": ("context only", ["task.views=[context]", "model=cnn_small"]),
    "multistream": ("multistream", []),
    "shared": ("multistream, shared weights", ["model.shared_weights=true"]),
}
METRICS = ("accuracy", "balanced_accuracy", "auroc")


def main() -> None:
    args = arguments(__doc__, "runs/multistream", VARIANTS, steps=800).parse_args()
    results = run_variants("lesion_multistream", VARIANTS, args.variants, args.seeds,
                           args.runs, [f"trainer.max_steps={args.steps}"], METRICS)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    names = {v: VARIANTS[v][0] for v in args.variants}
    bar_plot(results, names, METRICS, os.path.join(HERE, "accuracy.png"),
             "lesion type from a 6-px patch, its 48-px context, or both", ylim=(0.8, 1.0))
    print("| model | parameters | test accuracy | balanced accuracy | AUROC | "
          "nodule recall | hypodense recall | train img/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        print(f"| {name} | {rows[0]['parameters']:,} | "
              + " | ".join(mean_sd([r[m] for r in rows]) for m in (
                  *METRICS, "recall_lung_nodule", "recall_liver_hypodense"))
              + f" | {sum(r['train_images_per_second'] for r in rows) / len(rows):.0f} |")


if __name__ == "__main__":
    main()
