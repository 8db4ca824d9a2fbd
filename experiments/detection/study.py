"""Lesion detection on the phantoms over seeds: pixel classification vs
CenterNet-style vs Faster R-CNN-style, against the classical CAD baseline
(``cad_baseline.py``, whose 3 seeds are read from ``results.json``), on 2D slices
and 3D volumes (see README.md in this folder).

    python experiments/detection/study.py [--seeds 0 1 2] [--variants pixel ...]

Each variant is ``medjax-train`` with the overrides below, into
``<runs>/<variant>_seed<k>`` (a finished run there is only scored), scored on the
test split at its best validation-CPM checkpoint by ``learned.py``'s scoring:
FROC / CPM with a bootstrap interval, AP, sensitivity by lesion size, the
evaluation step's seconds per image after compilation, parameters. Writes
``study_results.json``, ``froc_study.png`` (mean curve over seeds, a band of one
sd), ``validation_cpm.png`` (validation CPM during training) and prints the README's table; ``--table-only`` redraws from the results.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from runner import append_row, arguments, load_rows, mean_sd, train, validation_curve

_PER_200 = ["trainer.eval_every=200", "trainer.checkpoint_every=200"]
VARIANTS = {
    "pixel": ("pixel classification, U-Net (2D)", ["experiment=detection_pixel"]),
    "centernet": (
        "CenterNet-style (2D)",
        ["experiment=detection_centernet", "trainer.max_steps=2000"],
    ),
    "faster_rcnn": (
        "Faster R-CNN-style, FPN (2D)",
        ["experiment=detection_faster_rcnn", "trainer.max_steps=1200", *_PER_200],
    ),
    # 3D: 32^3 volumes (12.5 x 12.5 x 8.75 mm voxels, lesion radii under 3
    # voxels): at 64^3 a step took 10 s beside another run on the 2-core CPU.
    # Both 3D models: a depth-3 U-Net of base width 8, batch 4. Pixel
    # classification gets 1000 steps more: at 2000 one seed had only just left
    # CPM 0 (at step 1000), while CenterNet's validation CPM had stopped
    # rising in two of its three seeds.
    "pixel3d": (
        "pixel classification, U-Net (3D)",
        ["experiment=detection_pixel3d", "data.image_size=32",
         "trainer.max_steps=3000", *_PER_200],
    ),
    "centernet3d": (
        "CenterNet-style (3D)",
        ["experiment=detection_centernet3d", "data.image_size=32",
         "trainer.max_steps=2000", *_PER_200],
    ),
}
# The table's two grids: LUNA16's rates, and the lesion radii (voxels).
RATES = ("froc_1_8", "froc_1_4", "froc_1_2", "froc_1", "froc_2", "froc_4", "froc_8")
SIZES = ("sensitivity_r0_2", "sensitivity_r2_3", "sensitivity_r3_4", "sensitivity_r4_inf")
# The mean FROC curve is read at these rates (false positives per scan).
CURVE_RATES = 2.0 ** np.linspace(-3, 3, 61)


def run_one(variant: str, seed: int, runs: str) -> dict:
    from learned import score_run

    from medjax.engine import sharding
    from medjax.metrics import detection as metrics

    run_dir = os.path.join(runs, f"{variant}_seed{seed}")
    overrides = [*VARIANTS[variant][1], f"seed={seed}", "trainer.progress=false"]
    summary = train(overrides, run_dir, fresh=False)
    (entry, curve), = score_run(
        variant, run_dir, sharding.data_mesh(), alternatives=False
    ).values()
    test = entry["test"]
    row = {
        "variant": variant,
        "seed": seed,
        "run_dir": run_dir,
        "overrides": overrides,
        "best_step": entry["step"],
        "parameters": entry["parameters"],
        "seconds_per_image": entry["seconds_per_image"],
        "wall_seconds": summary["wall_seconds"],
        "train_images_per_second": summary.get("train_images_per_second"),
        "curve": metrics.froc_sensitivities(
            curve["fps"], curve["sensitivity"], CURVE_RATES
        ).tolist(),
        **{k: v for k, v in test.items() if np.isscalar(v) or k == "cpm_interval"},
    }
    print(
        {k: row[k] for k in ("variant", "seed", "best_step", "cpm", "ap50")},
        flush=True,
    )
    return row


# The CAD baseline's results, by variant: cad_baseline.py and its --volumes.
CAD_RESULTS = {"cad": "results.json", "cad3d": "results_3d.json"}


def cad_rows() -> list[dict]:
    """The CAD baseline's random-forest seeds from ``CAD_RESULTS`` in the rows'
    form (CPM, the seven operating points, sensitivity by size at 1 FP/image,
    seconds per image)."""
    rows = []
    for variant, name in CAD_RESULTS.items():
        rows += _cad_rows(variant, os.path.join(HERE, name))
    return rows


def _cad_rows(variant: str, path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        runs = json.load(f)["runs"]
    rows = []
    for run in runs:
        if run.get("classifier", "random_forest") != "random_forest":
            continue
        rows.append(
            {
                "variant": variant,
                "seed": run["seed"],
                "cpm": run["cpm"],
                **dict(zip(RATES, run["sensitivities"])),
                **dict(zip(SIZES, run["sensitivity_by_size_at_1fp"])),
                "seconds_per_image": run.get("seconds_per_image", float("nan")),
            }
        )
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401  (sets the backend before pyplot)
    from medjax.metrics.detection import LUNA16_FP_RATES

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0), sharey=True)
    for ax, dims, title in ((axes[0], "2D", "2D slices (500 test)"),
                            (axes[1], "3D", "3D volumes, 32^3 (200 test)")):
        for i, (variant, (label, _)) in enumerate(VARIANTS.items()):
            if f"({dims})" not in label:
                continue
            curves = np.asarray([r["curve"] for r in rows if r["variant"] == variant])
            if not len(curves):
                continue
            cpm = [r["cpm"] for r in rows if r["variant"] == variant]
            mean, sd = curves.mean(0), curves.std(0, ddof=1) if len(curves) > 1 else 0
            ax.plot(CURVE_RATES, mean, color=f"C{i}",
                    label=f"{label} ({mean_sd(cpm)}, n={len(curves)})")
            ax.fill_between(CURVE_RATES, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        cad = [r for r in rows if r["variant"] == ("cad" if dims == "2D" else "cad3d")]
        if cad:
            points = np.asarray([[r[k] for k in RATES] for r in cad])
            ax.errorbar(LUNA16_FP_RATES, points.mean(0), yerr=points.std(0, ddof=1),
                        fmt="s--", ms=3, color="k", lw=0.8, capsize=2,
                        label=f"CAD, random forest ({mean_sd([r['cpm'] for r in cad])})")
        ax.set_xscale("log", base=2)
        ax.set_xlim(0.125, 8)
        ax.set_xticks([0.125, 0.25, 0.5, 1, 2, 4, 8],
                      ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("false positives per scan")
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="lower right", title="CPM, mean ± sd",
                      title_fontsize=7)
    axes[0].set_ylabel("sensitivity (mean over seeds, band: ± 1 sd)")
    fig.suptitle("Phantom lesions, test split: FROC", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_validation(rows: list[dict], path: str) -> None:
    """Validation CPM over training, one line per run: whether the runs had
    stopped improving when they ended."""
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401  (sets the backend before pyplot)

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharey=True)
    for ax, dims in zip(axes, ("2D", "3D")):
        for i, (variant, (label, _)) in enumerate(VARIANTS.items()):
            if f"({dims})" not in label:
                continue
            chosen = [r for r in rows if r["variant"] == variant]
            for k, row in enumerate(chosen):
                if not os.path.isfile(os.path.join(row["run_dir"], "metrics.jsonl")):
                    continue
                steps, cpm = validation_curve(row["run_dir"], "cpm")
                ax.plot(steps, cpm, "o-", ms=2.5, lw=1, color=f"C{i}",
                        label=label if k == 0 else None)
        ax.set_xlabel("training step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{dims}: one line per seed", fontsize=9)
    axes[0].set_ylabel("validation CPM")
    fig.suptitle("Validation CPM during training", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(values) -> str:
    """mean ± sd, or a dash where no lesion of that size exists (NaN)."""
    return mean_sd(values) if np.isfinite(np.asarray(values, float)).any() else "–"


def table(rows: list[dict]) -> None:
    labels = {**{k: v[0] for k, v in VARIANTS.items()},
              "cad": "classical CAD, random forest (2D)",
              "cad3d": "classical CAD, random forest (3D)"}
    columns = ("cpm", *RATES, "ap50", "ap")
    names = ("CPM", "1/8", "1/4", "1/2", "1", "2", "4", "8", "AP50", "AP")
    print("| detector | " + " | ".join(names) + " | ms/image | parameters | seeds |")
    print("| --- |" + " ---: |" * (len(columns) + 3))
    for variant, label in labels.items():
        chosen = [r for r in rows if r["variant"] == variant]
        if not chosen:
            continue
        cells = [mean_sd([r[c] for r in chosen]) if c in chosen[0] else ""
                 for c in columns]
        ms = mean_sd([1e3 * r["seconds_per_image"] for r in chosen])
        params = chosen[0].get("parameters") or ""
        print(f"| {label} | " + " | ".join(cells) + f" | {ms} | {params} | {len(chosen)} |")
    print("\nsensitivity at 1 FP/scan by lesion radius (voxels):\n")
    print("| detector | < 2 | 2-3 | 3-4 | >= 4 | best steps |")
    print("| --- |" + " ---: |" * (len(SIZES) + 1))
    for variant, label in labels.items():
        chosen = [r for r in rows if r["variant"] == variant and SIZES[0] in r]
        if chosen:
            steps = ", ".join(str(r["best_step"]) for r in chosen if "best_step" in r)
            print(f"| {label} | "
                  + " | ".join(_cell([r[s] for r in chosen]) for s in SIZES)
                  + f" | {steps} |")


def main() -> None:
    parser = arguments(__doc__, os.path.join(HERE, "runs"), VARIANTS)
    parser.add_argument("--table-only", action="store_true",
                        help="print the table and draw the figure from the results")
    args = parser.parse_args()
    path = os.path.join(HERE, "study_results.json")
    if not args.table_only:
        for variant in args.variants:
            for seed in args.seeds:
                append_row(path, run_one(variant, seed, args.runs), replace=True)
    rows = load_rows(path) + cad_rows()
    plot(rows, os.path.join(HERE, "froc_study.png"))
    plot_validation(rows, os.path.join(HERE, "validation_cpm.png"))
    table(rows)


if __name__ == "__main__":
    main()
