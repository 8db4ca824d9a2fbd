"""Sequence models on cine phantoms (ejection fraction, abnormal motion):
accuracy and cost (see README.md in this folder; slice stacks of volumes are
in ../slices).

    python experiments/sequences/cine/run.py [--seeds 0 1 2] [--steps 200]
        [--studies ef motion] [--report]

Every run is ``medjax-train experiment=<cine_ef | cine_motion>`` with the
study's sizes (``CINE``) and the
variant's overrides, scored on the test split at its best validation checkpoint
with ``medjax-eval``. Runs go seed by seed (every study and variant of seed 0,
then seed 1, ...), so an interrupted study still has whole seeds; a run whose
row is already in ``results.json`` with the same overrides is not repeated
(``--report`` only redraws the figures and tables). Two processes may share
the work: ``--seeds 0 1`` and ``--seeds 1 --reverse`` (each run is claimed).
Writes ``results.json``, ``ef_mae.png``, ``motion_auroc.png`` and
``ef_scatter.png`` (the test scatter of the best EF
model's first seed) here and prints the README's tables.
"""

import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import append_row, bar_plot, load_rows, mean_sd, model_cost, scored_run

RESULTS = os.path.join(HERE, "results.json")


def trainer(steps: int) -> list[str]:
    """A run of ``steps`` steps validated (and checkpointed) three times."""
    every = max(steps // 3, 1)
    return [
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={every}",
        f"trainer.checkpoint_every={every}",
        f"trainer.log_every={every // 2}",
        "trainer.progress=false",
        "optim.warmup_steps=15",
        # BatchNorm's running statistics must catch up within a short run:
        # at the default 0.99, 200 steps leave validation far off training.
        "++model.norm_momentum=0.9",
    ]


# Sizes chosen for a 2-core CPU shared by four studies (see the README): 32 px
# cines of 8 frames (one cycle: end-diastole at frame 0, end-systole at 4), 32^3
# volumes, batches of 8, and the small presets at half their widths.
CINE = [
    "data.image_size=32",
    "data.num_frames=8",
    "data.split_sizes={train:500,validation:100,test:200}",
    "data.batch_size=8",
    "data.eval_batch_size=50",
    # no augmentation at this budget: it slowed learning more than it helped
    "augment=none",
]
NARROW = ["++model.widths=[8,16,32]", "++model.features=32"]
CINE_VARIANTS = {
    "cnn_lstm": ("CNN-LSTM", ["model=cnn_lstm_small", *NARROW]),
    "cnn_gru": ("CNN-GRU", ["model=cnn_gru_small", *NARROW]),
    "cnn_bilstm": ("CNN-BiLSTM", ["model=cnn_bilstm_small", *NARROW]),
    "convlstm": (
        "ConvLSTM",
        ["model=convlstm_small", "++model.stem_widths=[8,16]", "++model.features=16"],
    ),
    "temporal_conv": ("temporal conv", ["model=temporal_conv_small", *NARROW]),
    "r2plus1d": ("(2+1)D CNN", ["model=r2plus1d_small", "++model.widths=[8,16,32]"]),
    "frame_mean": ("frame mean", ["model=frame_mean_small", *NARROW]),
}
STUDIES = {
    # name: (experiment, data sizes, variants, metrics; the first one is shown)
    "ef": ("cine_ef", CINE, CINE_VARIANTS, ("mae_pp", "rmse_pp", "r2")),
    "motion": (
        "cine_motion",
        CINE,
        CINE_VARIANTS,
        ("auroc", "accuracy", "balanced_accuracy"),
    ),
}


def load_results() -> list[dict]:
    return load_rows(RESULTS)


def save_row(row: dict) -> list[dict]:
    """Adds ``row`` to ``results.json`` (two study processes, e.g. ``--seeds 0 1``
    and ``--seeds 2``, may share it) and returns all rows."""
    return append_row(RESULTS, row)


def run_one(study: str, variant: str, seed: int, steps: int, runs: str) -> dict:
    experiment, sizes, variants, metrics = STUDIES[study]
    overrides = [
        f"experiment={experiment}",
        f"seed={seed}",
        *sizes,
        *trainer(steps),
        *variants[variant][1],
    ]
    run_dir = os.path.join(runs, f"{study}_{variant}_seed{seed}")
    row = {
        "study": study,
        "variant": variant,
        "seed": seed,
        **scored_run(overrides, run_dir),
    }
    # the rows of results.json call it so: a cine is not an image
    row["train_examples_per_second"] = row.pop("train_images_per_second")
    print(
        {
            k: row[k]
            for k in (
                "study",
                "variant",
                "seed",
                *metrics,
                "train_examples_per_second",
                "wall_seconds",
            )
        },
        flush=True,
    )
    return row


def study_cost(overrides: list[str], study: str) -> tuple[int, float]:
    """Parameters and forward FLOPs (:func:`runner.model_cost`) of a run's model
    on one cine or volume."""
    import jax
    import jax.numpy as jnp

    return model_cost(overrides, jax.ShapeDtypeStruct((1, 8, 32, 32, 1), jnp.float32))


def table(results: list[dict], study: str) -> None:
    _, _, variants, metrics = STUDIES[study]
    unit = "cines/s"
    print(
        f"\n| {study} | parameters | forward MFLOP | train {unit} | seeds | "
        + " | ".join(f"test {m}" for m in metrics)
        + " |"
    )
    print(
        "| --- | ---: | ---: | ---: | ---: | "
        + " | ".join("---:" for _ in metrics)
        + " |"
    )
    for variant, (label, _) in variants.items():
        rows = [r for r in results if r["study"] == study and r["variant"] == variant]
        if not rows:
            continue
        speed = np.mean([r["train_examples_per_second"] for r in rows])
        parameters, flops = study_cost(rows[0]["overrides"], study)
        print(
            f"| {label} | {parameters:,} | {flops / 1e6:.1f} | {speed:.1f} | "
            f"{len(rows)} | "
            + " | ".join(mean_sd([r[m] for r in rows]) for m in metrics)
            + " |"
        )


def figures(results: list[dict]) -> None:
    for study, metric, ylim, title in [
        ("ef", "mae_pp", (0, 16), "ejection fraction from 32 px, 8-frame cines"),
        ("motion", "auroc", (0.4, 1.0), "abnormal wall motion from the same cines"),
    ]:
        rows = [r for r in results if r["study"] == study]
        if not rows:
            continue
        names = {
            v: label
            for v, (label, _) in STUDIES[study][2].items()
            if any(r["variant"] == v for r in rows)
        }
        name = {"ef": "ef_mae", "motion": "motion_auroc"}[study]
        bar_plot(rows, names, [metric], os.path.join(HERE, f"{name}.png"), title, ylim)
    ef = [r for r in results if r["study"] == "ef"]
    if ef:
        means = {
            v: np.mean([r["mae_pp"] for r in ef if r["variant"] == v])
            for v in {r["variant"] for r in ef}
        }
        best = min(means, key=means.get)
        first = min((r for r in ef if r["variant"] == best), key=lambda r: r["seed"])
        figures_dir = os.path.join(first["run_dir"], "figures")
        scatter = [
            f
            for f in sorted(os.listdir(figures_dir))
            if f.startswith("test_") and f.endswith("_scatter.png")
        ]
        if scatter:
            shutil.copy(
                os.path.join(figures_dir, scatter[-1]),
                os.path.join(HERE, "ef_scatter.png"),
            )
            print(f"ef_scatter.png: {best}, seed {first['seed']}")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES)
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=200,
        help="training steps; another length than 200 keeps its rows in "
        "results_<steps>steps.json and draws no figures",
    )
    parser.add_argument(
        "--variants", nargs="+", help="only these variants (default: every one)"
    )
    parser.add_argument("--runs", default="runs/sequences_cine")
    parser.add_argument(
        "--reverse",
        action="store_true",
        help="take the runs last to first (a second process)",
    )
    parser.add_argument(
        "--report", action="store_true", help="only tabulate and draw results.json"
    )
    args = parser.parse_args()
    global RESULTS
    if args.steps != 200:
        RESULTS = os.path.join(HERE, f"results_{args.steps}steps.json")
    if not args.report:
        order = [
            (seed, study, variant)
            for seed in args.seeds
            for study in args.studies
            for variant in STUDIES[study][2]
            if args.variants is None or variant in args.variants
        ]
        os.makedirs(args.runs, exist_ok=True)
        for seed, study, variant in reversed(order) if args.reverse else order:
            experiment, sizes, variants, _ = STUDIES[study]
            probe = [
                f"experiment={experiment}",
                f"seed={seed}",
                *sizes,
                *trainer(args.steps),
                *variants[variant][1],
            ]
            if any(r["overrides"] == probe for r in load_results()):
                continue  # done on an earlier call, or by another study process
            # A run is claimed while it trains, so two study processes sharing
            # --runs never train into one directory (a killed one leaves
            # <run>.claim behind: delete it to rerun that run).
            claim = os.path.join(args.runs, f"{study}_{variant}_seed{seed}.claim")
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            try:
                save_row(run_one(study, variant, seed, args.steps, args.runs))
            except SystemExit as failed:  # one failed run: report it, go on
                print(f"FAILED {study} {variant} seed {seed}: {failed}")
            finally:
                os.remove(claim)
    results = load_results()
    for study in args.studies:
        table(results, study)
    if args.steps == 200:
        figures(results)


if __name__ == "__main__":
    main()
