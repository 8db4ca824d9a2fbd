"""2D U-Net slice by slice vs U-Net + bidirectional ConvLSTM across slices vs 3D
U-Net on the 3D organ phantoms: Dice, HD95, slice consistency and cost (see
README.md in this folder).

    python experiments/sequences/segmentation/run.py [--seeds 0 1 2] [--steps 200]

Each variant is ``medjax-train experiment=segmentation3d_convlstm`` on small
phantoms (32^3 volumes, 48 / 16 / 8 volumes; 32 x 32 x 16 patches, 3D sliding
windows over whole volumes in evaluation) with the overrides below. The
validation split is evaluated once, at the last step, and no checkpoint is chosen
on it, so its metrics are a held-out estimate (this saves one medjax-eval process
a run on a shared 2-core CPU). Cost: parameters, forward FLOPs of one patch from
XLA's cost analysis, training patches/s and wall clock of the whole process.
Writes ``results.json`` (after every run) and ``metrics.png`` here and prints the
README's table. Seeds are the outer loop, so a cut-short study still has every
variant.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import arguments, mean_sd, train  # noqa: E402

PATCH = (32, 32, 16)
COMMON = [
    "experiment=segmentation3d_convlstm",
    "data.image_size=32",
    "data.split_sizes={train:48,validation:16,test:8}",
    f"task.patch_size=[{','.join(map(str, PATCH))}]",
    "optim.warmup_steps=40",
    "trainer.progress=false",
]
WIDTH = 8  # base width of every U-Net here (unet_small has 16): CPU budget
VARIANTS = {
    "2d": (
        "2D U-Net, slice by slice",
        [f"model.base_width={WIDTH}", "model.recurrence=false"],
    ),
    "convlstm": (
        "2D U-Net + BiConvLSTM",
        [f"model.base_width={WIDTH}", "model.lstm_features=16"],
    ),
    "3d": (
        "3D U-Net",
        ["model=unet_small", "model.spatial_dims=3", f"+model.base_width={WIDTH}"],
    ),
}
METRICS = ("dice", "hd95", "asd", "slice_consistency")
CLASSES = ("body", "lung", "liver", "spleen", "spine", "aorta", "kidney")


def forward_flops(overrides: list[str]) -> float:
    """XLA's FLOP count of the model's forward pass on one training patch."""
    import jax
    import jax.numpy as jnp

    from medjax.config import compose
    from medjax.config.run import build_run

    run = build_run(compose("train", [*COMMON, *overrides]))
    patch = jax.ShapeDtypeStruct((1, *PATCH, 1), jnp.float32)
    variables = jax.eval_shape(
        lambda x: run.model.init(jax.random.key(0), x, train=False), patch
    )
    forward = jax.jit(lambda v, x: run.model.apply(v, x, train=False))
    cost = forward.lower(variables, patch).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def figure(results: list[dict], names: dict[str, str], path: str) -> None:
    """One panel per metric (and seconds per step): a bar per variant at the
    mean, a dot per seed."""
    from medjax import viz  # noqa: F401  (sets the backend before pyplot)
    import matplotlib.pyplot as plt

    panels = [
        ("dice", "validation Dice"),
        ("hd95", "HD95 (mm)"),
        ("slice_consistency", "slice consistency"),
        ("seconds_per_step", "training s / step"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    for ax, (metric, label) in zip(axes, panels):
        for i, variant in enumerate(names):
            values = [r[metric] for r in results if r["variant"] == variant]
            if values:
                ax.bar(i, np.mean(values), color=f"C{i}", alpha=0.5)
                ax.scatter([i] * len(values), values, color=f"C{i}", zorder=3, s=14)
        ax.set_xticks(
            range(len(names)), names.values(), rotation=20, ha="right", fontsize=8
        )
        ax.set_ylabel(label)
    fig.suptitle("organs of 32^3 torso phantoms (bars: mean; dots: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: list[dict], names: dict[str, str]) -> None:
    print(
        "| model | parameters | forward MFLOP / patch | train patches/s | "
        "wall clock s | Dice | HD95 mm | ASD mm | slice consistency |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        speed = np.mean([r["train_images_per_second"] for r in rows])
        wall = np.mean([r["wall_seconds"] for r in rows])
        print(
            f"| {name} | {rows[0]['parameters']:,} | "
            f"{rows[0]['forward_flops'] / 1e6:.0f} | {speed:.1f} | {wall:.0f} | "
            + " | ".join(mean_sd([r[m] for r in rows]) for m in METRICS)
            + " |"
        )
    print("\nPer class (Dice / slice consistency, mean over seeds):")
    print("| model | " + " | ".join(CLASSES) + " |")
    print("| --- |" + " ---: |" * len(CLASSES))
    for variant, name in names.items():
        rows = [r for r in results if r["variant"] == variant]
        if rows:
            cells = [
                f"{np.mean([r[f'dice_{c}'] for r in rows]):.3f} / "
                f"{np.nanmean([r[f'slice_consistency_{c}'] for r in rows]):+.3f}"
                for c in CLASSES
            ]
            print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = arguments(__doc__, "runs/sequences_segmentation", VARIANTS, steps=200)
    parser.add_argument(
        "--report",
        action="store_true",
        help="only redraw the figure and table from results.json",
    )
    args = parser.parse_args()
    names = {v: VARIANTS[v][0] for v in args.variants}
    if args.report:
        with open(os.path.join(HERE, "results.json")) as f:
            results = json.load(f)
        figure(results, names, os.path.join(HERE, "metrics.png"))
        table(results, names)
        return
    flops = {v: forward_flops(VARIANTS[v][1]) for v in args.variants}
    steps = [
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={args.steps}",
        f"trainer.checkpoint_every={args.steps}",
    ]
    results = []
    for seed in args.seeds:
        for variant in args.variants:
            run_dir = os.path.join(args.runs, f"{variant}_seed{seed}")
            summary = train(
                [*COMMON, *steps, f"seed={seed}", *VARIANTS[variant][1]], run_dir
            )
            validation = summary["final"]["validation"]
            row = {
                "variant": variant,
                "seed": seed,
                "run_dir": run_dir,
                **{k: v for k, v in validation.items() if k not in ("step", "split")},
                "parameters": summary["parameters"],
                "forward_flops": flops[variant],
                "train_images_per_second": summary["train_images_per_second"],
                "seconds_per_step": 4 / summary["train_images_per_second"],
                "wall_seconds": summary["wall_seconds"],
                "steps": summary["steps"],
            }
            print({k: row[k] for k in ("variant", "seed", *METRICS)}, flush=True)
            results.append(row)
            with open(os.path.join(HERE, "results.json"), "w") as f:
                json.dump(results, f, indent=2)
    figure(results, names, os.path.join(HERE, "metrics.png"))
    table(results, names)


if __name__ == "__main__":
    main()
