"""Is there a lesion in the volume? A CNN-LSTM over the axial slices against a 2D
CNN with a max over slices and a 3D CNN, on 64^3 torso phantoms (see README.md in
this folder).

    python experiments/sequences/slices/run.py [--seeds 0 1 2] [--report]

First, once: the slice detector, i.e. the main job's classifier (lesion or not
in a 64 x 64 slice, trained on slice labels) with the narrow widths of the
slice models. The slice models then start their per-slice ``backbone`` from it,
frozen (``transfer.mode=feature_extractor``), and train their head over slices
on the volume labels only; the 3D CNN has no 2D source and trains from scratch.
Each run is ``medjax-train experiment=lesion_slice_stack`` scored on the test
split at its best validation checkpoint by ``medjax-eval``. Rows already in
``results.json`` with the same overrides are not repeated. Writes
``results.json`` and ``auroc.png`` here and prints the README's table.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import (
    append_row,
    bar_plot,
    load_rows,
    mean_sd,
    model_cost,
    scored_run,
    train,
)

RESULTS = os.path.join(HERE, "results.json")
NARROW = ["++model.widths=[8,16,32]", "++model.features=32"]
# The slice detector: medjax-train's defaults (the main job: cnn_small, lesion vs
# healthy on 4000 torso slices of 64 x 64) with the slice models' widths.
SOURCE = [
    "+model.widths=[8,16,32]",
    "data.batch_size=16",
    "trainer.max_steps=1200",
    "trainer.eval_every=400",
    "trainer.checkpoint_every=400",
    "trainer.progress=false",
]
VOLUMES = [
    "experiment=lesion_slice_stack",
    "data.image_size=64",
    "data.split_sizes={train:600,validation:100,test:200}",
    "data.batch_size=8",
    "data.eval_batch_size=20",
    "trainer.progress=false",
    "optim.warmup_steps=15",
    # BatchNorm's running statistics must catch up within a short run.
    "++model.norm_momentum=0.9",
]


def schedule(steps: int) -> list[str]:
    every = steps // 3
    return [
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={every}",
        f"trainer.checkpoint_every={every}",
        f"trainer.log_every={every // 2}",
    ]


def frozen_source(source_dir: str) -> list[str]:
    return ["transfer.mode=feature_extractor", f"transfer.checkpoint={source_dir}"]


# name: (label, overrides, steps, needs the slice detector)
VARIANTS = {
    "cnn_lstm": (
        "CNN-LSTM over slices (frozen slice detector)",
        ["model=cnn_lstm_small", *NARROW],
        150,
        True,
    ),
    "frame_max": (
        "2D CNN, max over slices (frozen slice detector)",
        ["model=frame_max_small", *NARROW],
        150,
        True,
    ),
    "cnn3d": (
        "3D CNN (from scratch)",
        [
            "task=classification",
            "~task.slice_axis",
            "model=cnn_small",
            "model.spatial_dims=3",
            "++model.stem=imagenet",
            "++model.widths=[8,16,32]",
        ],
        300,
        False,
    ),
}
METRICS = ("auroc", "accuracy", "balanced_accuracy")


def slice_detector(runs: str) -> tuple[str, dict]:
    """Trains the slice detector once into ``<runs>/source``; its directory and
    validation scores."""
    source_dir = os.path.join(runs, "source")
    saved = os.path.join(source_dir, "study_train.json")
    if os.path.isfile(saved):
        with open(saved) as f:
            summary = json.load(f)
    else:
        summary = train(SOURCE, source_dir)
        with open(saved, "w") as f:
            json.dump(summary, f, indent=2)
    return source_dir, summary


def overrides_of(variant: str, seed: int, source_dir: str | None) -> list[str]:
    _, model, steps, transfer = VARIANTS[variant]
    return [
        *VOLUMES,
        f"seed={seed}",
        *schedule(steps),
        *model,
        *(frozen_source(source_dir) if transfer else []),
    ]


def table(results: list[dict]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    print(
        "\n| model | parameters | forward MFLOP | train volumes/s | steps "
        "| seeds | " + " | ".join(f"test {m}" for m in METRICS) + " | per seed |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | " + "---: | " * 3 + "--- |")
    volume = jax.ShapeDtypeStruct((1, 64, 64, 64, 1), jnp.float32)
    for variant, (label, *_) in VARIANTS.items():
        rows = sorted(
            (r for r in results if r["variant"] == variant), key=lambda r: r["seed"]
        )
        if not rows:
            continue
        overrides = [o for o in rows[0]["overrides"] if not o.startswith("transfer.")]
        # the length the rows trained for, not the one the script would train now
        (steps,) = {
            o.split("=", 1)[1] for o in overrides if o.startswith("trainer.max_steps=")
        }
        parameters, flops = model_cost(overrides, volume)
        speed = np.mean([r["train_examples_per_second"] for r in rows])
        print(
            f"| {label} | {parameters:,} | {flops / 1e6:.0f} | "
            f"{speed:.1f} | {steps} | {len(rows)} | "
            + " | ".join(mean_sd([r[m] for r in rows]) for m in METRICS)
            + " | "
            + ", ".join(f"{r['auroc']:.3f}" for r in rows)
            + " |"
        )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--runs", default="runs/sequences_slices")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if not args.report:
        os.makedirs(args.runs, exist_ok=True)
        source_dir, source = slice_detector(args.runs)
        print({"slice detector": source["final"]["validation"]}, flush=True)
        for seed in args.seeds:
            for variant in args.variants:
                overrides = overrides_of(variant, seed, source_dir)
                if any(r["overrides"] == overrides for r in load_rows(RESULTS)):
                    continue
                run_dir = os.path.join(args.runs, f"{variant}_seed{seed}")
                row = {
                    "variant": variant,
                    "seed": seed,
                    **scored_run(overrides, run_dir),
                }
                # named as in the cine study: a volume is not an image
                row["train_examples_per_second"] = row.pop("train_images_per_second")
                row["source_validation"] = source["final"]["validation"]
                print({k: row[k] for k in ("variant", "seed", *METRICS)}, flush=True)
                append_row(RESULTS, row)
    results = load_rows(RESULTS)
    table(results)
    names = {
        v: VARIANTS[v][0] for v in VARIANTS if any(r["variant"] == v for r in results)
    }
    if names:
        bar_plot(
            results,
            names,
            ["auroc"],
            os.path.join(HERE, "auroc.png"),
            "lesion in a 64^3 volume (test AUROC)",
            (0.4, 1.0),
        )


if __name__ == "__main__":
    main()
