"""Landmark localisation on the phantoms: heatmap regression (U-Net) vs direct
coordinate regression (CNN) on torso2d 64^2 slices, and orthogonal-plane
classification on torso3d 64^3 volumes with a backbone pretrained in 2D (see
README.md in this folder).

    python experiments/landmarks/run.py [--seeds 0 1 2] [--variants heatmap direct ...]

Each variant is ``medjax-train`` with the overrides below, into
``<runs>/<variant>_seed<k>`` (an existing run there resumes, so a finished one
is only scored), scored on the test split at its best validation checkpoint
(lowest ``mre``). ``planes3d`` fine-tunes the backbone of ``pretrain2d`` of the
same seed (trained first when missing). Writes ``results.json`` and
``mre.png`` here and prints the README's tables.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from runner import append_row, arguments, evaluate, load_rows, mean_sd, train

VARIANTS = {
    "heatmap": ("heatmap, U-Net (2D)", ["experiment=landmarks_heatmap"]),
    "heatmap_softmax": (
        "heatmap, U-Net, softmax over voxels (2D)",
        ["experiment=landmarks_heatmap", "task.loss_function=softmax"],
    ),
    "direct": ("direct regression, CNN (2D)", ["experiment=landmarks_direct"]),
    "pretrain2d": (
        "direct, small CNN (2D; planes' source)",
        ["experiment=landmarks_pretrain2d"],
    ),
    "planes3d": (
        "planes, fine-tuned (3D)",
        ["experiment=landmarks_planes3d", "transfer.mode=finetune"],
    ),
    "planes3d_scratch": (
        "planes, from scratch (3D)",
        ["experiment=landmarks_planes3d"],
    ),
    "heatmap3d": ("heatmap, 3D U-Net (3D)", ["experiment=landmarks_heatmap3d"]),
}
METRICS = (
    "mre",
    "mre_voxels",
    "sdr_2mm",
    "sdr_2.5mm",
    "sdr_3mm",
    "sdr_4mm",
    "false_positives",
    "missed",
)
NAMES = (
    "vertebral_body",
    "spinal_canal",
    "aorta",
    "right_kidney",
    "left_kidney",
    "spleen",
)


def run_one(variant: str, seed: int, runs: str) -> dict:
    run_dir = os.path.join(runs, f"{variant}_seed{seed}")
    overrides = [*VARIANTS[variant][1], f"seed={seed}", "trainer.progress=false"]
    if variant == "planes3d":
        source = os.path.join(runs, f"pretrain2d_seed{seed}")
        if not os.path.isfile(os.path.join(source, "summary.json")):
            run_one("pretrain2d", seed, runs)
        overrides.append(f"transfer.checkpoint='{os.path.abspath(source)}'")
    summary = train(overrides, run_dir, fresh=False)
    metrics = evaluate(run_dir)["metrics"]
    row = {
        "variant": variant,
        "seed": seed,
        "run_dir": run_dir,
        "overrides": overrides,
        "best_step": summary.get("best_checkpoint_step"),
        "wall_seconds": summary["wall_seconds"],
        **{
            k: v
            for k, v in metrics.items()
            if k in METRICS
            or k.startswith("mre_")
            or k in ("num_examples", "num_present", "presence_accuracy")
        },
    }
    print(
        {k: row[k] for k in ("variant", "seed", "mre", "mre_voxels", "sdr_4mm")},
        flush=True,
    )
    return row


def plot(rows: list[dict], path: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from medjax import viz  # noqa: F401  (sets the backend before pyplot)

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.6 * len(variants), 3.6))
    for ax, metric, label in (
        (axes[0], "mre_voxels", "test MRE (voxels)"),
        (axes[1], "sdr_4mm", "test SDR within 4 mm"),
    ):
        for i, variant in enumerate(variants):
            values = [r[metric] for r in rows if r["variant"] == variant]
            ax.bar(i, np.mean(values), color=f"C{i}", alpha=0.5)
            ax.scatter([i] * len(values), values, color=f"C{i}", zorder=3, s=14)
        ax.set_xticks(
            range(len(variants)),
            [VARIANTS[v][0] for v in variants],
            rotation=25,
            ha="right",
            fontsize=7,
        )
        ax.set_ylabel(label)
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--")
    fig.suptitle(
        "Phantom landmarks (bars: mean; dots: seeds; dashed: one voxel)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def copy_cases(rows: list[dict]) -> None:
    """The test cases medjax-eval drew for each variant's first seed, here as
    ``cases_<variant>.png``."""
    import glob
    import shutil

    for row in rows:
        if row["seed"] != min(
            r["seed"] for r in rows if r["variant"] == row["variant"]
        ):
            continue
        drawn = sorted(
            glob.glob(os.path.join(row["run_dir"], "figures", "test_step_*.png"))
        )
        if drawn:
            shutil.copyfile(
                drawn[-1], os.path.join(HERE, f"cases_{row['variant']}.png")
            )


def table(rows: list[dict]) -> None:
    print(
        "| method | test MRE (mm) | MRE (voxels) | SDR 2 mm | SDR 2.5 mm | SDR 3 mm "
        "| SDR 4 mm | false pos. | missed | seeds |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, (label, _) in VARIANTS.items():
        chosen = [r for r in rows if r["variant"] == variant]
        if chosen:
            print(
                f"| {label} | "
                + " | ".join(mean_sd([r[m] for r in chosen]) for m in METRICS)
                + f" | {len(chosen)} |"
            )
    print("\n| method | " + " | ".join(NAMES) + " |  (test MRE, voxels)")
    print("| --- |" + " ---: |" * len(NAMES))
    for variant, (label, _) in VARIANTS.items():
        chosen = [r for r in rows if r["variant"] == variant]
        if chosen:
            print(
                f"| {label} | "
                + " | ".join(
                    mean_sd([r[f"mre_voxels_{n}"] for r in chosen]) for n in NAMES
                )
                + " |"
            )


def main() -> None:
    parser = arguments(__doc__, os.path.join(HERE, "runs"), VARIANTS)
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="print the tables and draw the figure from results.json",
    )
    args = parser.parse_args()
    path = os.path.join(HERE, "results.json")
    rows = load_rows(path)
    if not args.table_only:
        for variant in args.variants:
            for seed in args.seeds:
                append_row(path, run_one(variant, seed, args.runs), replace=True)
    rows = load_rows(path)
    plot(rows, os.path.join(HERE, "mre.png"))
    copy_cases(rows)
    table(rows)


if __name__ == "__main__":
    main()
