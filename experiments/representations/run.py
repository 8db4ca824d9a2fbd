"""Representations for segmentation: raw intensity patches vs hand-designed
features vs stacked-autoencoder codes, each under the same per-pixel MLP, and a
U-Net, for liver segmentation from 20 labelled slices (see README.md here).

    python experiments/representations/run.py [--seeds 0 1 2]

Data: the built-in 64 x 64 CT-like torso phantoms
(``medjax.data.datasets.phantoms.phantoms``, data seed 0, CT windowed W400 L40 to
[-1, 1]) built into ``<runs>/data`` with splits train ``--pool`` / validation 20 /
test ``--test``. The train split is the unlabelled pool; each seed draws
``--labelled`` of its slices to label (liver = ``organ_mask == 3``, against
everything else). The test split scores every method.

Methods, per seed (the seed picks the labelled slices and every initialisation):

- ``patch``: the ``--patch`` x ``--patch`` window of intensities of each pixel;
- ``handcrafted``: ``skimage.feature.multiscale_basic_features`` (sigma 0.5 to 16,
  6 scales: smoothed intensity, gradient magnitude, 2 Hessian eigenvalues) and
  Gaussian-weighted histograms of uniform LBP (8 neighbours, radius 1): 34
  channels;
- ``sae``: the 32-dimensional code of a ``StackedAutoencoder`` (121-128-64-32) of
  the same window, trained greedily layer by layer, then end to end, on
  ``--sae-patches`` windows drawn from all pool slices, without labels
  (``medjax.engine.pretraining.train_stacked_autoencoder``);
- each under the same head: features standardised by the labelled pixels' mean
  and sd, ``medjax.models.mlp.MLP(hidden_sizes=(64,))``, softmax cross-entropy,
  Adam, ``--head-steps`` minibatches of ``--head-batch`` labelled pixels
  (``medjax.engine.fit_arrays``); the label is the arg max;
- ``unet``: ``unet_small`` (0.48 M parameters) through medjax's training loop
  (``task=segmentation model=unet_small data=phantoms2d_seg`` composed as
  ``medjax-train`` would, made binary: liver vs rest), AdamW 3e-3, cosine, batch
  10 of the labelled slices, ``--unet-steps`` steps, final checkpoint, with
  ``model.norm=--unet-norm``: GroupNorm by default, because unet_small's own
  BatchNorm generalises poorly from running statistics of 20 slices (README;
  ``--unet-norm batch --tag _unet_batchnorm`` reproduces that run).

Liver Dice on the test slices: ``per-slice`` (mean over slices whose truth holds
liver, MONAI's convention, ``medjax.metrics.dice_per_class``; all test slices hold
liver) and ``pooled`` (one Dice over all test pixels). Writes ``results.json`` and
``contours.png`` (seed 0, truth red, automatic yellow; names end in ``--tag``)
into ``--output-dir`` (this folder), run directories and data into ``--runs``.
"""

import argparse
import dataclasses
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax import metrics, viz
from medjax.data import pipeline
from medjax.data import schema as schema_lib
from medjax.data.datasets.phantoms import phantoms
from medjax.data.datasets.phantoms.torso import ORGAN_LABELS
from medjax.engine.fit_arrays import fit_arrays
from medjax.engine.pretraining import train_stacked_autoencoder
from medjax.models.autoencoder import StackedAutoencoder
from medjax.models.mlp import MLP
from medjax.tasks.segmentation import pixel_features as pf
from medjax.viz.segmentation import draw_contours

HERE = os.path.dirname(os.path.abspath(__file__))
LIVER = ORGAN_LABELS["liver"]
METHODS = {
    "patch": "intensity patch 11x11 + MLP",
    "handcrafted": "hand-designed (skimage) + MLP",
    "sae": "stacked-AE code + MLP",
    "unet": "U-Net (unet_small, {norm} norm)",
}
LBP = ((8, 1.0),)


def load(args):
    """``(data, pool_images [P, H, W], pool_liver, test_images [T, H, W],
    test_liver)``; liver masks are 0/1 uint8."""
    data = phantoms(
        data_dir=os.path.join(args.runs, "data"),
        split_sizes={"train": args.pool, "validation": 20, "test": args.test},
    )
    arrays = []
    for split, count in (("train", args.pool), ("test", args.test)):
        batch = pipeline.read_examples(
            data.source(split), range(count), data.convert, ("image", "organ_mask")
        )
        arrays += [
            batch["image"][..., 0],
            (batch["organ_mask"] == LIVER).astype(np.uint8),
        ]
    return data, *arrays


# -- the per-pixel head, the same for every representation


def train_head(x, y, args, seed):
    """An MLP on standardised ``x [N, D]`` for ``y [N]``: Adam with a cosine decay
    from ``--head-lr``, a fresh permutation of the rows every epoch. Returns
    ``(predict: [M, D] -> labels [M], log)``, ``log`` holding the loss curve and
    the final loss over all ``N`` rows."""
    mean, sd = x.mean(0), x.std(0) + 1e-6
    model = MLP(num_outputs=2, hidden_sizes=(64,))
    rows = (((x - mean) / sd).astype(np.float32), y.astype(np.int32))
    params = model.init(jax.random.key(seed), rows[0][:1], train=False)["params"]

    def loss_fn(params, batch, _key):
        xb, yb = batch
        logits = model.apply({"params": params}, xb, train=False)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    schedule = optax.cosine_decay_schedule(args.head_lr, args.head_steps)
    fit = fit_arrays(
        loss_fn,
        params,
        rows,
        tx=optax.adam(schedule),
        steps=args.head_steps,
        batch_size=args.head_batch,
        order="epochs",
        epoch_seed=seed,
        steps_per_call=250,
    )
    apply = jax.jit(
        lambda p, v: jnp.argmax(model.apply({"params": p}, v, train=False), -1)
    )

    def predict(features):
        return np.asarray(
            apply(fit.params, ((features - mean) / sd).astype(np.float32))
        )

    return predict, {
        "loss_curve": _curve(np.asarray(fit.losses)),
        "final_loss": float(jax.jit(loss_fn)(fit.params, rows, None)),
    }


def _curve(losses, points=10):
    """Mean loss over ``points`` equal stretches of training (fewer when there
    are fewer values)."""
    chunks = np.array_split(losses, min(points, len(losses)))
    return [float(chunk.mean()) for chunk in chunks]


# -- representations: image [H, W] -> [H * W, D]


def representations(args, sae):
    model, variables = sae
    return {
        "patch": lambda image: pf.image_patches(image, args.patch),
        "handcrafted": lambda image: pf.handcrafted_features(image, lbp=LBP).reshape(
            image.size, -1
        ),
        "sae": lambda image: pf.autoencoder_codes(
            model, variables, pf.image_patches(image, args.patch)
        ),
    }


def train_sae(pool, args, seed):
    rng = np.random.default_rng([seed, 1])
    patches = pf.sample_patches(pool, args.patch, args.sae_patches, rng)
    model = StackedAutoencoder(hidden=(128, 64, 32))
    variables, history = train_stacked_autoencoder(
        model,
        patches[..., None],
        pretrain_steps=args.sae_steps,
        finetune_steps=args.sae_steps,
        batch_size=256,
        learning_rate=1e-3,
        seed=seed,
    )
    summary = {
        "pretrain_loss_curves": [
            _curve(np.asarray(h)) for h in history["pretrain_losses"]
        ],
        "finetune_loss_curve": _curve(np.asarray(history["finetune_losses"])),
        "mse_after_pretraining": history["mse_after_pretraining"],
        "mse_after_finetuning": history["mse_after_finetuning"],
        "patch_variance": float(patches.var()),
    }
    return (model, variables), summary


def pixel_method(train_features, labelled_liver, test_features, args, seed):
    """The head trained on the labelled pixels' features (a list of ``[H * W, D]``,
    one per labelled slice) and applied to each test slice's; returns the test
    labels ``[T, H, W]`` and the head's log."""
    predict, log = train_head(
        np.concatenate(train_features), labelled_liver.reshape(-1), args, seed
    )
    shape = labelled_liver.shape[1:]
    predicted = np.stack([predict(f).reshape(shape) for f in test_features])
    return predicted.astype(np.uint8), log


# -- the U-Net, through medjax's training loop


class LiverSource:
    """Records ``indices`` of ``source``, with ``liver_mask`` (``organ_mask ==
    liver``, uint8) added: a binary target for ``SegmentationTask``."""

    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self):
        return len(self.indices)

    def __getitems__(self, indices):
        records = self.source.__getitems__([int(self.indices[i]) for i in indices])
        return [
            {**r, "liver_mask": (np.asarray(r["organ_mask"]) == LIVER).astype(np.uint8)}
            for r in records
        ]

    def __getitem__(self, index):
        return self.__getitems__([index])[0]


def train_unet(data, chosen, test_images, args, seed):
    from medjax.config import compose
    from medjax.config.run import build_run
    from medjax.engine import loop, sharding
    from medjax.engine.evaluate import restore_checkpoint
    from medjax.engine.reporting import read_metrics
    from medjax.engine.state import init_state

    overrides = [
        "task=segmentation",
        "model=unet_small",
        "data=phantoms2d_seg",
        f"seed={seed}",
        "task.num_classes=2",
        "task.class_names=[rest,liver]",
        "task.num_figure_cases=0",
        f"data.data_dir={os.path.join(args.runs, 'data')}",
        f"data.split_sizes={{train:{args.pool},validation:20,test:{args.test}}}",
        "data.batch_size=10",
        "data.eval_batch_size=20",
        f"trainer.max_steps={args.unet_steps}",
        f"model.norm={args.unet_norm}",
    ]
    run = build_run(compose("train", overrides))
    sources = {
        "train": LiverSource(data.source("train"), chosen),
        "validation": LiverSource(data.source("validation"), range(20)),
        "test": LiverSource(data.source("test"), range(args.test)),
    }
    liver_data = dataclasses.replace(
        run.data,
        sources=sources,
        schema={**run.data.schema, "liver_mask": schema_lib.label_map()},
    )
    task = dataclasses.replace(run.task, mask_key="liver_mask").configure(liver_data)
    run_dir = os.path.join(args.runs, f"unet_{args.unet_norm}_seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    summary = loop.train(
        task=task,
        model=run.model,
        tx=run.tx,
        data=liver_data,
        run_dir=run_dir,
        max_steps=args.unet_steps,
        eval_every=args.unet_steps,
        checkpoint_every=args.unet_steps,
        log_every=10,
        seed=seed,
        progress=False,
    )
    state = init_state(run.model, run.tx, liver_data, task, sharding.data_mesh(), seed)
    state, _ = restore_checkpoint(state, run_dir, "latest")
    forward = jax.jit(lambda v, x: jnp.argmax(run.model.apply(v, x, train=False), -1))
    predicted = np.concatenate(
        [
            np.asarray(forward(state.variables(), test_images[i : i + 50, ..., None]))
            for i in range(0, len(test_images), 50)
        ]
    )
    losses = [
        r["loss"]
        for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        if r["split"] == "train"
    ]
    validation = (summary["final"]["validation"] or {}).get("dice_liver")
    return predicted.astype(np.uint8), {
        "loss_curve": _curve(np.asarray(losses)),
        "final_loss": float(losses[-1]),
        "norm": args.unet_norm,
        "validation_dice_liver": validation,
        "train_images_per_second": summary["train_images_per_second"],
    }


# -- scoring, table, figure


def dice_scores(predicted, truth):
    per_slice = np.asarray(metrics.dice_per_class(predicted, truth, 2))[:, 1]
    pooled = 2 * np.sum(predicted & truth) / (predicted.sum() + truth.sum())
    return per_slice, float(np.nanmean(per_slice)), float(pooled)


def table(rows, names):
    def mean_sd(values):
        values = np.asarray(values)
        return (
            f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
        )

    lines = [
        "| method | liver Dice per slice (mean ± sd) | pooled Dice | per seed (per slice) |",
        "| --- | ---: | ---: | --- |",
    ]
    for method, name in names.items():
        mine = [r for r in rows if r["method"] == method]
        if mine:
            per_slice = [r["dice_per_slice"] for r in mine]
            pooled = [r["dice_pooled"] for r in mine]
            lines.append(
                f"| {name} | {mean_sd(per_slice)} | {mean_sd(pooled)} | "
                f"{', '.join(f'{v:.3f}' for v in per_slice)} |"
            )
    return "\n".join(lines)


def figure(test_images, test_liver, predictions, slice_dice, names, path):
    import matplotlib.pyplot as plt  # after medjax.viz, which sets the backend

    area = test_liver.sum((1, 2))
    order = np.argsort(area)
    cases = [int(order[int(q * (len(order) - 1))]) for q in (0.1, 0.4, 0.7, 0.95)]
    fig, axes = plt.subplots(
        len(predictions),
        len(cases),
        figsize=(2.3 * len(cases), 2.45 * len(predictions)),
        squeeze=False,
    )
    for row, method in enumerate(predictions):
        for col, case in enumerate(cases):
            ax = axes[row, col]
            draw_contours(
                ax,
                test_images[case],
                predictions[method][case],
                test_liver[case],
                vmin=-1,
                vmax=1,
            )
            ax.set_title(
                f"test {case}: Dice {slice_dice[method][case]:.2f}", fontsize=8
            )
        axes[row, 0].text(
            -0.06,
            0.5,
            names[method],
            transform=axes[row, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.suptitle(
        "liver, 20 labelled slices (seed 0): truth red, automatic yellow", fontsize=9
    )
    fig.tight_layout()
    viz.save_figure(fig, path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS)
    )
    parser.add_argument("--runs", default="runs/representations")
    parser.add_argument(
        "--pool", type=int, default=1000, help="unlabelled train slices"
    )
    parser.add_argument("--labelled", type=int, default=20)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--patch", type=int, default=11)
    parser.add_argument("--head-steps", type=int, default=2000)
    parser.add_argument("--head-batch", type=int, default=1024)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--sae-patches", type=int, default=10000)
    parser.add_argument("--sae-steps", type=int, default=1000)
    parser.add_argument("--unet-steps", type=int, default=300)
    parser.add_argument(
        "--unet-norm", default="group", choices=("group", "batch", "instance", "none")
    )
    parser.add_argument("--tag", default="", help="suffix of the output files' names")
    parser.add_argument("--output-dir", default=HERE)
    args = parser.parse_args()

    names = {m: name.format(norm=args.unet_norm) for m, name in METHODS.items()}
    start = time.perf_counter()
    data, pool, pool_liver, test_images, test_liver = load(args)
    rows, shown, cache = [], {}, {}
    for seed in args.seeds:
        chosen = np.sort(
            np.random.default_rng(seed).choice(args.pool, args.labelled, replace=False)
        )
        sae, sae_log = (None, None), None
        if "sae" in args.methods:
            began = time.perf_counter()
            sae, sae_log = train_sae(pool, args, seed)
            sae_log["seconds"] = time.perf_counter() - began
        represent = representations(args, sae)
        for method in args.methods:
            began = time.perf_counter()
            if method == "unet":
                predicted, log = train_unet(data, chosen, test_images, args, seed)
            else:
                if method == "handcrafted":  # the same for every seed: once
                    test_features = cache.setdefault(
                        method, [represent[method](image) for image in test_images]
                    )
                else:
                    test_features = (represent[method](image) for image in test_images)
                predicted, log = pixel_method(
                    [represent[method](image) for image in pool[chosen]],
                    pool_liver[chosen],
                    test_features,
                    args,
                    seed,
                )
            per_slice, dice, pooled = dice_scores(predicted, test_liver)
            row = {
                "method": method,
                "seed": seed,
                "dice_per_slice": dice,
                "dice_pooled": pooled,
                "seconds": time.perf_counter() - began,
                "labelled_slices": chosen.tolist(),
                **log,
            }
            if method == "sae":
                row["sae"] = sae_log
            rows.append(row)
            print(
                f"seed {seed} {method}: liver Dice per slice {dice:.3f}, pooled "
                f"{pooled:.3f}; final train loss {log['final_loss']:.4f}, curve "
                f"{[round(v, 4) for v in log['loss_curve']]} ({row['seconds']:.0f} s)",
                flush=True,
            )
            if seed == args.seeds[0]:
                shown[method] = (predicted, per_slice)
    seconds = time.perf_counter() - start
    with open(os.path.join(args.output_dir, f"results{args.tag}.json"), "w") as f:
        json.dump({"seconds": seconds, "args": vars(args), "rows": rows}, f, indent=2)
    figure(
        test_images,
        test_liver,
        {m: p for m, (p, _) in shown.items()},
        {m: d for m, (_, d) in shown.items()},
        names,
        os.path.join(args.output_dir, f"contours{args.tag}.png"),
    )
    print(table(rows, names))
    print(f"wall clock {seconds:.0f} s")


if __name__ == "__main__":
    main()
