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
from runner import arguments, mean_sd, model_cost, train  # noqa: E402

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


def patch_cost(overrides: list[str]) -> tuple[int, float]:
    """Parameters and forward FLOPs (:func:`runner.model_cost`) of a variant's
    model on one training patch; FLOPs of the lowered program, as the README's
    table was measured (the compiled one counts about 1 % more)."""
    import jax
    import jax.numpy as jnp

    patch = jax.ShapeDtypeStruct((1, *PATCH, 1), jnp.float32)
    return model_cost([*COMMON, *overrides], patch, compiled=False)


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


def coronal_figure(
    names: dict[str, str], runs: str, path: str, seed: int = 0, case: int = 0
) -> None:
    """Truth and each variant's prediction of one validation volume in the
    coronal plane through its centre (rows: x; columns: the slices z), where
    slice-to-slice flicker shows as ragged edges along z."""
    import jax

    from medjax import viz  # noqa: F401  (sets the backend before pyplot)
    import matplotlib.pyplot as plt

    from medjax.cli.common import run_config
    from medjax.config.run import build_run
    from medjax.data import pipeline
    from medjax.engine import sharding
    from medjax.engine.evaluate import configured, restore_checkpoint
    from medjax.engine.state import init_state

    panels = {}
    for variant, name in names.items():
        run_dir = os.path.join(runs, f"{variant}_seed{seed}")
        run = build_run(run_config("run.py", run_dir))
        task = configured(run.task, run.data)
        state = init_state(
            run.model, run.tx, run.data, task, sharding.data_mesh(), seed
        )
        state, _ = restore_checkpoint(state, run_dir, "latest")
        batch = pipeline.read_examples(
            run.data.source("validation"), [case], run.data.convert, task.batch_keys
        )
        apply = jax.jit(lambda x: run.model.apply(state.variables(), x, train=False))
        logits = task.predict(apply, task.inputs(batch))
        panels[name] = np.asarray(task.decode(logits))[0]
        if "truth" not in panels:
            panels = {
                "image": np.asarray(task.inputs(batch))[0, ..., 0],
                "truth": np.asarray(task.labels(batch))[0],
                **panels,
            }
    column = panels["truth"].shape[1] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.9))
    for ax, (name, volume) in zip(axes, panels.items()):
        plane = volume[:, column, :]  # [x, z]: z runs left to right
        if name == "image":
            ax.imshow(plane, cmap="gray")
        else:
            ax.imshow(plane, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("slice z", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"validation volume {case}, coronal plane y = {column} (seed {seed})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _number(value) -> float:
    """A metric from results.json, where an undefined one (NaN) is null."""
    return float("nan") if value is None else float(value)


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
            cells = []
            for c in CLASSES:
                dice = np.mean([r[f"dice_{c}"] for r in rows])
                gaps = [_number(r[f"slice_consistency_{c}"]) for r in rows]
                cells.append(f"{dice:.3f} / {np.nanmean(gaps):+.3f}")
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
    # Runs of another length than the default write results_<steps>steps.json etc.
    suffix = "" if args.steps == 200 else f"_{args.steps}steps"
    results_path = os.path.join(HERE, f"results{suffix}.json")
    figures = (
        os.path.join(HERE, f"metrics{suffix}.png"),
        os.path.join(HERE, f"coronal{suffix}.png"),
    )
    if args.report:
        with open(results_path) as f:
            results = json.load(f)
        for variant in {r["variant"] for r in results if r["parameters"] is None}:
            parameters = patch_cost(VARIANTS[variant][1])[0]
            for row in results:
                if row["variant"] == variant:
                    row["parameters"] = parameters
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        figure(results, names, figures[0])
        coronal_figure(names, args.runs, figures[1], seed=min(args.seeds))
        table(results, names)
        return
    costs = {v: patch_cost(VARIANTS[v][1]) for v in args.variants}
    steps = [
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={args.steps}",
        f"trainer.checkpoint_every={args.steps}",
    ]
    # Rows of runs not repeated now are kept (seeds added to a study later).
    planned = {(v, s) for s in args.seeds for v in args.variants}
    results = []
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = [r for r in json.load(f) if (r["variant"], r["seed"]) not in planned]
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
                "parameters": costs[variant][0],
                "forward_flops": costs[variant][1],
                "train_images_per_second": summary["train_images_per_second"],
                "seconds_per_step": 4 / summary["train_images_per_second"],
                "wall_seconds": summary["wall_seconds"],
                "steps": summary["steps"],
            }
            print({k: row[k] for k in ("variant", "seed", *METRICS)}, flush=True)
            results.append(row)
            with open(results_path, "w") as f:
                json.dump(results, f, indent=2)
    figure(results, names, figures[0])
    coronal_figure(names, args.runs, figures[1], seed=min(args.seeds))
    table(results, names)


if __name__ == "__main__":
    main()
