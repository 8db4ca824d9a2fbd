"""Unsupervised lesion detection on the 64 x 64 torso phantoms: six detectors
trained on healthy slices only, scored per pixel and per image, beside a
supervised U-Net (see README.md in this folder).

    python experiments/anomaly_detection/run.py [--seeds 0 1 2] [--steps 1000]
        [--dae-steps 4000] [--supervised-steps 1000] [--report] [--merge]

Per seed: trains ``experiment=anomaly_{ae,vae,denoising,ae_coarse,coarse_dae}``
and ``experiment=anomaly_supervised`` in ``runs/anomaly_detection/`` (as
``medjax-train`` would); scores the validation and test splits with each
method; picks each method's options (restoration step and weight) and its
segmentation threshold on validation; reports on test. Writes
``results.json``, ``metrics.png``, ``anomaly_maps.png`` and ``training.png``
into this folder and prints the README's tables.

Methods, each giving a map per slice (the per-image score is its 99th
percentile over the voxels scored):
- ``ae``, ``vae``, ``dae`` (white noise), ``ae_coarse`` (the AE, coarse
  noise), ``coarse_dae`` (U-Net, coarse noise): smoothed squared residual;
- ``restoration_vae`` / ``restoration_ae``: residual of a restoration;
- ``features``: nearest-neighbour distance of the coarse DAE's encoder
  features to a memory bank of healthy training voxels;
- ``supervised``: the supervised U-Net's lesion probability.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.data import pipeline
from medjax.engine import loop, sharding
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.reporting import read_metrics
from medjax.engine.state import init_state
from medjax.inferers.anomaly_features import distance_maps, layer_features, memory_bank
from medjax.metrics import psnr
from medjax.metrics.reconstruction import smooth_maps

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINED = {
    "ae": "anomaly_ae", "vae": "anomaly_vae", "dae": "anomaly_denoising",
    "ae_coarse": "anomaly_ae_coarse", "coarse_dae": "anomaly_coarse_dae",
    "supervised": "anomaly_supervised",
}
NAMES = {
    "ae": "autoencoder", "vae": "VAE", "dae": "denoising AE (white noise)",
    "ae_coarse": "AE, coarse noise", "coarse_dae": "coarse-noise DAE (U-Net)",
    "restoration_vae": "restoration (VAE)", "restoration_ae": "restoration (AE)",
    "features": "feature NN (coarse DAE encoder)",
    "supervised": "supervised U-Net (upper bound)",
}
# The 3-seed study's (ae_coarse and restoration_ae on request: --methods).
DEFAULT_METHODS = ["ae", "vae", "dae", "coarse_dae", "restoration_vae", "features",
                   "supervised"]
# The trained model each scoring method uses (the others use their own).
NEEDS = {"restoration_vae": "vae", "restoration_ae": "ae", "features": "coarse_dae"}
REGIONS = {"body": None, "liver": (3,)}  # ORGAN_LABELS["liver"]
FEATURE_LAYERS = ("unet/down_1", "unet/down_2")
RESTORATION_GRID = [(s, w) for s in (0.05, 0.2) for w in (0.02, 0.2)]
RESTORATION_STEPS = 10
RESTORATION_TUNING_SLICES = 100  # of validation, for the grid
BANK_PER_IMAGE = 4


@dataclasses.dataclass
class Trained:
    task: object
    model: object
    variables: dict
    data: object
    seconds: float
    run_dir: str


def train(variant: str, seed: int, steps: int, runs: str, evaluations: int = 4) -> Trained:
    """Trains ``experiment=TRAINED[variant]`` (validation ``evaluations``
    times) and restores its last checkpoint: no labels pick the model."""
    every = max(steps // evaluations, 1)
    overrides = [f"experiment={TRAINED[variant]}", f"seed={seed}",
                 f"trainer.max_steps={steps}", f"trainer.eval_every={every}",
                 f"trainer.checkpoint_every={steps}"]
    task, model, tx, data, augment, *_ = build_run(compose("train", overrides))
    run_dir = os.path.join(runs, f"{variant}_seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    loop.train(
        task=task, model=model, tx=tx, data=data,
        augment=augment if variant == "supervised" else None, run_dir=run_dir,
        max_steps=steps, eval_every=every, checkpoint_every=steps, log_every=100,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - start
    state, _ = restore_checkpoint(
        init_state(model, tx, data, task, sharding.data_mesh(), seed), run_dir, "latest"
    )
    print(f"  trained {variant} seed {seed}: {steps} steps in {seconds:.0f} s", flush=True)
    return Trained(task, model, state.variables(), data, seconds, run_dir)


def split_arrays(data, split: str) -> dict[str, np.ndarray]:
    """Every example of ``split``: image, label, lesion mask, organ mask."""
    parts = []
    for batch in pipeline.eval_batches(
        data.source(split), batch_size=data.eval_batch_size, convert=data.convert,
        keys=("image", "label", "lesion_mask", "organ_mask"), num_threads=data.num_threads,
    ):
        valid = batch["valid"]
        parts.append({k: np.asarray(v)[valid] for k, v in batch.items() if k != "valid"})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def in_batches(function, images: np.ndarray, size: int = 100) -> np.ndarray:
    return np.concatenate([np.asarray(function(jnp.asarray(images[i:i + size])))
                           for i in range(0, len(images), size)])


def residual_maps(trained: Trained, images: np.ndarray, **restoration) -> np.ndarray:
    """The task's maps (``AnomalyTask.predict`` then ``anomaly``): of the
    reconstruction, or of a restoration with ``restoration`` options."""
    task = dataclasses.replace(trained.task, **restoration)

    @jax.jit
    def maps(x):
        def apply(inputs):
            return trained.model.apply(trained.variables, inputs, train=False)

        outputs = task.predict(apply, x)
        return task.anomaly(x, outputs.get("restored", outputs["reconstruction"]))[0]

    return in_batches(maps, images)


def healthy_quality(trained: Trained, arrays: dict) -> dict[str, float]:
    """PSNR and SSIM (dm-pix) of the reconstructions of healthy slices."""
    import dm_pix

    healthy = arrays["image"][arrays["label"] == 0]
    recon = in_batches(jax.jit(lambda x: trained.model.apply(
        trained.variables, x, train=False)["reconstruction"]), healthy)
    mse = np.mean((recon - healthy) ** 2, axis=(1, 2, 3))
    # SSIM of images in [0, 1] (the window's [-1, 1] shifted), max_val 1.
    ssim = dm_pix.ssim((jnp.asarray(healthy) + 1) / 2, (jnp.asarray(recon) + 1) / 2,
                       max_val=1.0)
    return {"psnr": float(np.mean(psnr(jnp.asarray(mse)))), "ssim": float(jnp.mean(ssim))}


def feature_maps(trained: Trained, train_images: np.ndarray, arrays: dict[str, dict],
                 seed: int, sigma: float) -> dict[str, np.ndarray]:
    """Per split, nearest-neighbour distance maps of ``FEATURE_LAYERS``
    features to a bank of ``BANK_PER_IMAGE`` random body voxels of every
    healthy training slice."""
    features = jax.jit(lambda x: layer_features(
        trained.model, trained.variables, x, FEATURE_LAYERS))
    body_threshold = trained.task.body_threshold
    bank = []
    for i in range(0, len(train_images), 100):
        chunk = train_images[i:i + 100]
        f = np.asarray(features(jnp.asarray(chunk)))
        inside = chunk[..., 0] > body_threshold
        for j in range(len(chunk)):
            bank.append(memory_bank(f[j:j + 1], inside[j:j + 1], BANK_PER_IMAGE,
                                    seed=seed * 100003 + i + j))
    bank = np.concatenate(bank)
    result = {}
    for split, split_data in arrays.items():
        maps = np.concatenate([
            distance_maps(np.asarray(features(jnp.asarray(split_data["image"][i:i + 50]))), bank)
            for i in range(0, len(split_data["image"]), 50)
        ])
        result[split] = np.asarray(smooth_maps(jnp.asarray(maps), sigma))
    return result


def supervised_maps(trained: Trained, images: np.ndarray) -> np.ndarray:
    return in_batches(jax.jit(lambda x: jax.nn.softmax(
        trained.model.apply(trained.variables, x, train=False))[..., 1]), images)


def scores(task, maps: np.ndarray, arrays: dict, region, threshold=None) -> dict:
    """``AnomalyTask.split_metrics`` of ``maps`` (any method's), scored over
    the body or inside ``region`` labels of the organ mask."""
    task = dataclasses.replace(
        task, region_key=None if region is None else "organ_mask",
        region_labels=() if region is None else region, dice_threshold=threshold,
    )
    image = jnp.asarray(arrays["image"])
    score, inside = task.score_maps(jnp.asarray(maps), image,
                                    None if region is None else jnp.asarray(arrays["organ_mask"]))
    host = {"score": np.asarray(score), "label": arrays["label"], "anomaly_map": maps,
            "lesion_mask": (arrays["lesion_mask"] > 0).astype(np.uint8),
            "inside": np.asarray(inside).astype(np.uint8)}
    return task.split_metrics(host)


def evaluate(task, maps: dict[str, np.ndarray], arrays: dict[str, dict]) -> dict:
    """Per region: validation's ⌈Dice⌉ threshold, test metrics (``dice`` at
    that threshold), prefixed by the region's name."""
    result = {}
    for name, region in REGIONS.items():
        validation = scores(task, maps["validation"], arrays["validation"], region)
        test = scores(task, maps["test"], arrays["test"], region,
                      validation["best_dice_threshold"])
        result.update({f"{name}_{k}": v for k, v in test.items()})
        result[f"{name}_validation_pixel_auprc"] = validation["pixel_auprc"]
    return result


def run_seed(seed: int, steps: dict[str, int], runs: str, methods: list[str],
             evaluations: int = 4) -> tuple[list[dict], dict]:
    trained = {}
    needed = {NEEDS.get(method, method) for method in methods}
    for variant in TRAINED:
        if variant in needed:
            trained[variant] = train(variant, seed, steps[variant], runs, evaluations)
    anomaly = next(t for v, t in trained.items() if v != "supervised")
    arrays = {split: split_arrays(anomaly.data, split) for split in ("validation", "test")}
    task = anomaly.task
    rows, all_maps = [], {}
    for method in methods:
        start = time.perf_counter()
        row = {"method": method, "seed": seed,
               "steps": steps[NEEDS.get(method, method)]}
        if method in ("ae", "vae", "dae", "ae_coarse", "coarse_dae"):
            t = trained[method]
            maps = {s: residual_maps(t, a["image"]) for s, a in arrays.items()}
            row.update(healthy_quality(t, arrays["validation"]), train_seconds=t.seconds)
        elif method.startswith("restoration_"):
            t = trained[method.split("_")[1]]
            best = None
            for step_size, weight in RESTORATION_GRID:  # chosen on validation
                options = {"restoration_steps": RESTORATION_STEPS,
                           "restoration_step_size": step_size,
                           "restoration_weight": weight}
                few = {k: v[:RESTORATION_TUNING_SLICES] for k, v in arrays["validation"].items()}
                found = scores(task, residual_maps(t, few["image"], **options), few,
                               None)["pixel_auprc"]
                if best is None or found > best[0]:
                    best = (found, options)
            maps = {s: residual_maps(t, a["image"], **best[1]) for s, a in arrays.items()}
            row.update(best[1])
        elif method == "features":
            train_images = np.concatenate([b["image"][b["valid"]] for b in pipeline.eval_batches(
                anomaly.data.source("train"), batch_size=200, convert=anomaly.data.convert,
                keys=("image",), num_threads=anomaly.data.num_threads)])
            maps = feature_maps(trained["coarse_dae"], train_images, arrays, seed,
                                task.map_sigma)
        elif method == "supervised":
            maps = {s: supervised_maps(trained["supervised"], a["image"])
                    for s, a in arrays.items()}
            row["train_seconds"] = trained["supervised"].seconds
        row.update(evaluate(task, maps, arrays), score_seconds=time.perf_counter() - start)
        rows.append(row)
        all_maps[method] = maps["test"]
        print(f"  {method} seed {seed}: body pixel AUPRC {row['body_pixel_auprc']:.3f}, "
              f"Dice {row['body_dice']:.3f}, image AUROC {row['body_auroc']:.3f}; liver "
              f"pixel AUPRC {row['liver_pixel_auprc']:.3f}, image AUROC "
              f"{row['liver_auroc']:.3f}", flush=True)
    return rows, {"maps": all_maps, "arrays": arrays["test"],
                  "runs": {v: t.run_dir for v, t in trained.items()}}


def mean_sd(values) -> str:
    values = np.asarray(values, float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {sd:.3f}"


def tables(results: list[dict], methods: list[str]) -> str:
    columns = [("body_pixel_auroc", "pixel AUROC"), ("body_pixel_auprc", "pixel AUPRC"),
               ("body_dice", "Dice (val. threshold)"), ("body_best_dice", "⌈Dice⌉ on test"),
               ("body_auroc", "image AUROC")]
    out = []
    for region in REGIONS:
        head = [name for _, name in columns]
        lines = [f"**Scored over the {region}** (test, mean ± sd over seeds)", "",
                 "| method | " + " | ".join(head) + " |",
                 "| --- |" + " ---: |" * len(head)]
        for method in methods:
            rows = [r for r in results if r["method"] == method]
            if rows:
                cells = [mean_sd([r[key.replace("body", region)] for r in rows])
                         for key, _ in columns]
                lines.append(f"| {NAMES[method]} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    quality = ["| model | healthy validation PSNR (dB) | SSIM | steps | training (s) |",
               "| --- | ---: | ---: | ---: | ---: |"]
    for method in methods:
        rows = [r for r in results if r["method"] == method and "psnr" in r]
        if rows:
            quality.append(
                f"| {NAMES[method]} | {np.mean([r['psnr'] for r in rows]):.1f} ± "
                f"{np.std([r['psnr'] for r in rows], ddof=1) if len(rows) > 1 else 0:.1f} | "
                f"{np.mean([r['ssim'] for r in rows]):.3f} | "
                f"{'/'.join(sorted({str(r.get('steps', '?')) for r in rows}))} | "
                f"{np.mean([r['train_seconds'] for r in rows]):.0f} |")
    out.append("\n".join(quality))
    return "\n\n".join(out)


def plot_metrics(results: list[dict], methods: list[str], path: str) -> None:
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401  (the backend, before pyplot)

    keys = [("body_pixel_auprc", "pixel AUPRC, body"), ("body_dice", "Dice, body"),
            ("body_auroc", "image AUROC, body"), ("liver_pixel_auprc", "pixel AUPRC, liver"),
            ("liver_auroc", "image AUROC, liver")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys), 3.6), sharey=True)
    for ax, (key, title) in zip(axes, keys):
        for i, method in enumerate(methods):
            values = [r[key] for r in results if r["method"] == method]
            ax.barh(i, np.mean(values), color=f"C{i}", alpha=0.5)
            ax.scatter(values, [i] * len(values), color=f"C{i}", s=12, zorder=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.axvline(0.5 if "auroc" in key else np.nan, color="grey", lw=0.8, ls="--")
    axes[0].set_yticks(range(len(methods)), [NAMES[m] for m in methods], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("test split, bars: mean over seeds, dots: seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_maps(example: dict, methods: list[str], path: str, count: int = 5) -> None:
    """Test slices (lesion-bearing first, one healthy last): the image with the
    lesions contoured in red, then every method's map (its own colour scale
    per panel), seed 0."""
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401

    arrays = example["arrays"]
    lesion = np.flatnonzero(arrays["label"] > 0)[: count - 1]
    order = np.r_[lesion, np.flatnonzero(arrays["label"] == 0)[:1]]
    columns = 1 + len(methods)
    fig, axes = plt.subplots(len(order), columns, figsize=(1.6 * columns, 1.6 * len(order) + 0.5),
                             squeeze=False)
    for i, k in enumerate(order):
        mask = arrays["lesion_mask"][k] > 0
        panels = [arrays["image"][k, ..., 0]] + [example["maps"][m][k] for m in methods]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j == 0:
                ax.imshow(panel, cmap="gray", vmin=-1, vmax=1)
            else:
                ax.imshow(panel, cmap="inferno", vmin=0, vmax=max(float(panel.max()), 1e-6))
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="red", linewidths=0.6)
            ax.axis("off")
            if i == 0:
                ax.set_title("image" if j == 0 else NAMES[methods[j - 1]], fontsize=6)
    fig.suptitle("test slices, seed 0: anomaly maps, lesions contoured in red", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(runs: dict[str, str], path: str) -> None:
    """Validation PSNR and pixel AUPRC during training, seed 0."""
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for i, (variant, run_dir) in enumerate(runs.items()):
        if variant == "supervised":
            continue
        rows = [r for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                if r["split"] == "validation"]
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes, ("psnr", "pixel_auprc")):
            ax.plot(steps, [r[key] for r in rows], "o-", color=f"C{i}", label=NAMES[variant],
                    ms=3)
    axes[0].set_ylabel("validation PSNR (dB), all slices")
    axes[1].set_ylabel("validation pixel AUPRC, body")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000,
                        help="training steps of the autoencoders with a code")
    parser.add_argument("--dae-steps", type=int, default=4000,
                        help="of the coarse-noise DAE (a U-Net)")
    parser.add_argument("--supervised-steps", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", choices=list(NAMES), default=DEFAULT_METHODS)
    parser.add_argument("--runs", default="runs/anomaly_detection")
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--evaluations", type=int, default=4,
                        help="validations during each training run")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows of METHODS and SEEDS in OUT/results.json "
                        "(the figures of these methods get their names as a suffix)")
    parser.add_argument("--report", action="store_true",
                        help="only the tables and figures of OUT/results.json and the "
                        "seed-0 runs' training curves (no anomaly-map figure)")
    args = parser.parse_args()
    if args.report:
        with open(os.path.join(args.out, "results.json")) as f:
            results = json.load(f)["results"]
        methods = [m for m in args.methods if any(r["method"] == m for r in results)]
        plot_metrics(results, methods, os.path.join(args.out, "metrics.png"))
        plot_training({v: os.path.join(args.runs, f"{v}_seed0") for v in TRAINED
                       if os.path.isdir(os.path.join(args.runs, f"{v}_seed0"))},
                      os.path.join(args.out, "training.png"))
        print(tables(results, methods))
        return
    start = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE, check=False).stdout.strip()
    steps = {v: args.steps for v in TRAINED}
    steps.update(coarse_dae=args.dae_steps, supervised=args.supervised_steps)
    results, example, suffix, methods = [], None, "", args.methods
    if args.merge:
        with open(os.path.join(args.out, "results.json")) as f:
            old = json.load(f)
        for r in old["results"]:  # the rows kept say what they ran
            r.setdefault("commit", old["commit"])
            r.setdefault("steps", old["steps"][NEEDS.get(r["method"], r["method"])])
        results = [r for r in old["results"]
                   if not (r["method"] in args.methods and r["seed"] in args.seeds)]
        suffix = "_" + "_".join(args.methods)
        methods = [m for m in NAMES if m in args.methods
                   or any(r["method"] == m for r in results)]
    for seed in args.seeds:
        rows, maps = run_seed(seed, steps, args.runs, args.methods, args.evaluations)
        results += [dict(r, commit=commit) for r in rows]
        if example is None:
            example = maps
            plot_maps(example, args.methods,
                      os.path.join(args.out, f"anomaly_maps{suffix}.png"))
            plot_training(example["runs"], os.path.join(args.out, f"training{suffix}.png"))
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"commit": commit, "steps": steps, "results": results}, f, indent=1)
        plot_metrics(results, methods, os.path.join(args.out, "metrics.png"))
    print(tables(results, methods))
    print(f"commit {commit}; {(time.perf_counter() - start) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
