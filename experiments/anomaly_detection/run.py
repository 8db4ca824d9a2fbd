"""Anomaly detection by reconstruction error: autoencoder vs denoising autoencoder
vs VAE, over seeds (see README.md in this folder).

    python experiments/anomaly_detection/run.py [--seeds 0 1 2] [--steps 200]
        [--override task.region_key=organ_mask 'task.region_labels=[2,3]'] [--tag _region]

Each run composes ``experiment=anomaly_<variant>`` exactly as ``medjax-train``
would, trains it in ``runs/anomaly_detection/<variant>_seed<k>/``, evaluates the
final checkpoint on the test split (model selection uses no labels), and for seed
0 exports the test split's latent codes. Writes ``results.json``, ``auroc.png``,
one anomaly-map figure and one latent scatter per variant into this folder, and
prints the README's table.
"""

import argparse
import json
import os
import shutil
import time

import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.engine import loop, sharding
from medjax.engine.evaluate import evaluate, restore_checkpoint
from medjax.engine.state import init_state
from medjax.engine.step import compile_steps
from medjax.inferers.latents import export_latents

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {"ae": "autoencoder", "denoising": "denoising AE", "vae": "VAE"}


def run_one(variant: str, seed: int, steps: int, runs: str, data_dir: str | None,
            extra: list[str] = (), tag: str = "") -> dict:
    overrides = [f"experiment=anomaly_{variant}", f"seed={seed}", f"trainer.max_steps={steps}",
                 f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}", *extra]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    cfg = compose("train", overrides)
    task, model, tx, data, augment, *_ = build_run(cfg)
    run_dir = os.path.join(runs, f"{variant}{tag}_seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    loop.train(
        task=task, model=model, tx=tx, data=data, augment=None, run_dir=run_dir,
        max_steps=steps, eval_every=steps, checkpoint_every=steps, log_every=50,
        seed=seed, best_metric="auroc", progress=False,
    )
    seconds = time.perf_counter() - start
    mesh = sharding.data_mesh()
    state, _ = restore_checkpoint(
        init_state(model, tx, data, task, mesh, seed), run_dir, "latest"
    )
    _, eval_fn = compile_steps(task, mesh)
    test = evaluate(
        eval_fn, state, data, "test", task, mesh,
        figure_path=os.path.join(run_dir, "figures", "test.png"),
    )
    if seed == 0:
        shutil.copy(os.path.join(run_dir, "figures", "test.png"),
                    os.path.join(HERE, f"anomaly_maps_{variant}{tag}.png"))
        latents = os.path.join(run_dir, "latents")
        export_latents(model, state.variables(), data, "test", latents,
                       title=f"{VARIANTS[variant]}: test codes, PCA")
        shutil.copy(os.path.join(latents, "latents_pca.png"),
                    os.path.join(HERE, f"latents_{variant}{tag}.png"))
    print(f"{variant} seed {seed}: test AUROC {test['auroc']:.3f}, AUPRC {test['auprc']:.3f}, "
          f"PSNR {test['psnr']:.1f} dB ({seconds:.0f} s)", flush=True)
    return {"variant": variant, "seed": seed, "train_seconds": seconds,
            **{k: test[k] for k in ("auroc", "auprc", "psnr", "mse", "num_examples")}}


def plot(results: list[dict], path: str) -> None:
    from medjax import viz  # noqa: F401  (the backend, before pyplot)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.2))
    for ax, metric in zip(axes, ("auroc", "auprc")):
        for i, variant in enumerate(VARIANTS):
            values = [r[metric] for r in results if r["variant"] == variant]
            if not values:
                continue
            ax.bar(i, np.mean(values), color=f"C{i}", alpha=0.5)
            ax.scatter([i] * len(values), values, color=f"C{i}", zorder=3, s=14)
        ax.set_xticks(range(len(VARIANTS)), VARIANTS.values())
        ax.set_ylabel(f"test {metric.upper()}")
        ax.set_ylim(0.4, 1.0)
        ax.axhline(0.5 if metric == "auroc" else np.nan, color="grey", lw=0.8, ls="--")
    fig.suptitle("lesion vs healthy by reconstruction error (bars: mean, dots: seeds)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: list[dict]) -> str:
    lines = ["| model | test AUROC (mean ± sd) | test AUPRC | test PSNR (dB) | per seed AUROC |",
             "| --- | ---: | ---: | ---: | --- |"]
    for variant, name in VARIANTS.items():
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            continue
        a = np.array([r["auroc"] for r in rows])
        p = np.array([r["auprc"] for r in rows])
        s = np.array([r["psnr"] for r in rows])
        lines.append(
            f"| {name} | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} | "
            f"{p.mean():.3f} | {s.mean():.1f} | {', '.join(f'{v:.3f}' for v in a)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--runs", default="runs/anomaly_detection")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--override", nargs="*", default=[], help="more Hydra overrides")
    parser.add_argument("--tag", default="", help="suffix of this study's output files")
    args = parser.parse_args()
    results = [
        run_one(variant, seed, args.steps, args.runs, args.data_dir, args.override, args.tag)
        for variant in args.variants for seed in args.seeds
    ]
    with open(os.path.join(HERE, f"results{args.tag}.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(results, os.path.join(HERE, f"auroc{args.tag}.png"))
    print(table(results))


if __name__ == "__main__":
    main()
