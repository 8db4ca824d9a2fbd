"""Unsupervised pretraining (DBN, stacked autoencoder) vs random initialisation
when only a small labelled set is available.

Data: ``torso2d`` phantom slices at ``--image-size``
(``medjax.data.datasets.phantoms.phantoms``).
The ``train`` split (``--pool`` slices) is the unlabelled pool; each seed draws
``--labelled`` slices of it at random and gives them their exam label (lesion
present or not); the ``test`` split (``--test`` slices, never seen in training)
scores every model.

Arms, each run with seeds 0..``--seeds``-1 (the seed picks the labelled subset,
the initialisation and the pretraining noise):

- ``dbn_pretrained``: greedy RBM pretraining of ``--hidden`` on the whole pool
  (``medjax.engine.pretraining.pretrain_dbn``, CD-1, plain SGD), copied into a
  ``DBNClassifier`` (``medjax.models.dbn.copy_rbm_weights``), then fine-tuned
  end to end on the labelled slices;
- ``dbn_random``: the same ``DBNClassifier``, the same initial head, random
  hidden layers (flax's default init), fine-tuned identically;
- ``sae_pretrained``: a ``StackedAutoencoder`` of the same widths pretrained
  greedily then end to end on the pool
  (``medjax.engine.pretraining.train_stacked_autoencoder``); its encoder layers
  ``encoder_k`` are copied into the hidden layers ``Dense_k`` of an ``MLP``
  (``medjax.models.mlp``: Dense-ReLU layers and a linear head), fine-tuned
  identically;
- ``mlp_random``: that ``MLP`` with random hidden layers (the stacked AE's own
  baseline: ReLU layers, unlike the DBN's sigmoid ones).

Every arm sees the same inputs, run once per kind in ``--inputs``: ``binary``
(``image > 0``, i.e. brighter than 40 HU, as ``RBMTask`` binarises) and ``gray``
(the [-1, 1] window mapped to [0, 1], which the RBMs take as Bernoulli means);
and every arm fine-tunes with the same optimiser (Adam at
``--lr``), steps (``--steps``), batch (``--batch-size`` drawn from the labelled
slices) and loss (softmax cross-entropy, 2 classes). No early stopping: the
models are scored after the last step (there is no validation set to choose a
step with); the test AUROC every ``--eval-every`` steps is recorded only to draw
the curves.

Reference (one seed per input kind): the two random-init architectures trained
on the labels of the whole pool (``--reference-steps`` of
``--reference-batch-size``), to show how far these dense networks get on this
label at all.

Writes ``results.json`` and ``pretraining.png`` next to this file (or to
``--output-dir``).

    python experiments/pretraining/run.py
"""

import argparse
import json
import os
import tempfile
import time

from medjax import viz  # noqa: F401

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from medjax import metrics
from medjax.data import pipeline
from medjax.data.datasets.phantoms import phantoms
from medjax.engine.fit_arrays import fit_arrays
from medjax.engine.pretraining import pretrain_dbn, train_stacked_autoencoder
from medjax.models.autoencoder import StackedAutoencoder
from medjax.models.dbn import DBNClassifier, copy_rbm_weights
from medjax.models.mlp import MLP
from medjax.models.rbm import RBM

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ("dbn_pretrained", "dbn_random", "sae_pretrained", "mlp_random")
LABELS = {
    "dbn_pretrained": "DBN, RBM-pretrained",
    "dbn_random": "DBN architecture, random init",
    "sae_pretrained": "MLP, stacked-AE-pretrained",
    "mlp_random": "MLP, random init",
}


def load(args, kind):
    """``(pool [N, D], pool_labels [N], test [M, D], test_labels [M])``: flattened
    inputs in [0, 1], ``binary`` or ``gray``."""
    data = phantoms(
        image_size=args.image_size, data_dir=args.data_dir,
        split_sizes={"train": args.pool, "validation": 1, "test": args.test},
    )
    splits = []
    for split, count in (("train", args.pool), ("test", args.test)):
        batch = pipeline.read_examples(
            data.source(split), range(count), data.convert, ("image", "label")
        )
        image = np.asarray(batch["image"], np.float32).reshape(count, -1)
        if kind == "binary":  # as RBMTask and DBNClassifier(threshold=0) do
            x = (image > 0).astype(np.float32)
        else:  # the [-1, 1] window as Bernoulli means
            x = (image + 1.0) / 2.0
        splits += [x, np.asarray(batch["label"], np.int32)]
    return splits


def finetune(model, params, x, y, test_x, test_y, args, key, steps=None, batch_size=None):
    """Adam on ``batch_size`` (default ``--batch-size``) rows drawn from ``(x, y)``,
    ``steps`` (default ``--steps``) steps (``fit_arrays``' random order); returns
    the test metrics after the last step and the test AUROC curve."""
    steps, batch_size = steps or args.steps, batch_size or args.batch_size

    def loss_fn(params, batch, _key):
        xb, yb = batch
        logits = model.apply({"params": params}, xb, train=False)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    predict = jax.jit(lambda params: model.apply({"params": params}, test_x, train=False))

    def score(params):
        logits = np.asarray(predict(params), np.float64)
        lesion_score = logits[:, 1] - logits[:, 0]
        return {
            "auroc": metrics.auroc(lesion_score, test_y),
            "accuracy": float(np.mean(np.argmax(logits, -1) == test_y)),
        }

    curve = [(0, score(params)["auroc"])]

    def record(done, params):
        if done % args.eval_every == 0 or done == steps:
            curve.append((done, score(params)["auroc"]))

    fit = fit_arrays(
        loss_fn, params, (x, y), tx=optax.adam(args.lr), steps=steps,
        batch_size=batch_size, key=key, callback=record,
    )
    final = score(fit.params)
    final["train_loss_last"] = float(fit.losses[-1])
    return final, curve


def run_seed(seed, pool, pool_y, test_x, test_y, args):
    key = jax.random.key(seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pool), args.labelled, replace=False)
    x, y = pool[chosen], pool_y[chosen]
    hidden = tuple(args.hidden)
    finetune_key = jax.random.fold_in(key, 3)  # same minibatches for every arm
    results, timing = {}, {}

    # (a), (b): DBN. One initialisation; (a) overwrites its hidden layers.
    dbn = DBNClassifier(num_classes=2, hidden_sizes=hidden, threshold=None)
    init = dbn.init(jax.random.fold_in(key, 0), pool[:1], train=False)["params"]
    start = time.perf_counter()
    rbm_variables, rbm_history = pretrain_dbn(
        [RBM(num_hidden=h) for h in hidden], pool, tx=optax.sgd(args.rbm_lr),
        epochs=args.rbm_epochs, batch_size=args.rbm_batch_size,
        key=jax.random.fold_in(key, 1), threshold=None,  # pool is in [0, 1] already
    )
    timing["dbn_pretraining_s"] = time.perf_counter() - start
    starts = {"dbn_pretrained": copy_rbm_weights(init, rbm_variables), "dbn_random": init}

    # (c), (d): stacked autoencoder and its MLP baseline.
    mlp = MLP(num_outputs=2, hidden_sizes=hidden)
    mlp_init = mlp.init(jax.random.fold_in(key, 0), pool[:1], train=False)["params"]
    start = time.perf_counter()
    images = pool.reshape(len(pool), args.image_size, args.image_size, 1)
    sae_variables, sae_history = train_stacked_autoencoder(
        StackedAutoencoder(hidden=hidden), images, pretrain_steps=args.sae_steps,
        finetune_steps=args.sae_steps, batch_size=args.sae_batch_size,
        learning_rate=args.sae_lr, seed=seed + 1000,
    )
    timing["sae_pretraining_s"] = time.perf_counter() - start
    sae_params = dict(mlp_init)
    for k in range(len(hidden)):
        sae_params[f"Dense_{k}"] = sae_variables["params"][f"encoder_{k}"]
    starts.update(sae_pretrained=sae_params, mlp_random=mlp_init)

    curves = {}
    for arm in ARMS:
        model = dbn if arm.startswith("dbn") else mlp
        start = time.perf_counter()
        results[arm], curves[arm] = finetune(
            model, starts[arm], x, y, test_x, test_y, args, finetune_key
        )
        timing[f"{arm}_finetune_s"] = time.perf_counter() - start
    pretraining = {
        "rbm_reconstruction_error_last_epoch": [h[-1]["reconstruction_error"] for h in rbm_history],
        "sae_mse_after_pretraining": sae_history["mse_after_pretraining"],
        "sae_mse_after_finetuning": sae_history["mse_after_finetuning"],
    }
    return {
        "seed": seed, "labelled_positives": int(y.sum()), "results": results,
        "curves": curves, "timing": timing, "pretraining": pretraining,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pool", type=int, default=3000, help="unlabelled slices")
    parser.add_argument("--labelled", type=int, default=100, help="labelled slices (from the pool)")
    parser.add_argument("--test", type=int, default=600, help="held-out test slices")
    parser.add_argument("--inputs", nargs="+", choices=("binary", "gray"), default=["binary", "gray"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rbm-epochs", type=int, default=20)
    parser.add_argument("--rbm-lr", type=float, default=0.05)
    parser.add_argument("--rbm-batch-size", type=int, default=20)
    parser.add_argument("--sae-steps", type=int, default=1500,
                        help="steps per level and of end-to-end autoencoder training")
    parser.add_argument("--sae-lr", type=float, default=1e-3)
    parser.add_argument("--sae-batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=500, help="fine-tuning steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning Adam rate")
    parser.add_argument("--batch-size", type=int, default=20, help="fine-tuning batch")
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--reference-steps", type=int, default=2000,
                        help="steps of the all-labels reference runs")
    parser.add_argument("--reference-batch-size", type=int, default=64)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "pretrain", "data"))
    parser.add_argument("--output-dir", default=HERE)
    args = parser.parse_args()

    wall = time.perf_counter()
    results = {}
    for kind in args.inputs:
        results[kind] = run_input(kind, args)
    wall = time.perf_counter() - wall

    print(f"\n{'inputs':<7} {'arm':<15} {'test AUROC':>15} {'test accuracy':>15}")
    for kind, result in results.items():
        for arm, row in result["summary"].items():
            print(f"{kind:<7} {arm:<15} {row['auroc']['mean']:.3f} ± {row['auroc']['std']:.3f}   "
                  f"{row['accuracy']['mean']:.3f} ± {row['accuracy']['std']:.3f}")
        for arm, row in result["all_labels"].items():
            print(f"{kind:<7} {arm + ' (all)':<15} {row['auroc']:.3f}           "
                  f"{row['accuracy']:.3f}      (reference: all {args.pool} pool labels, seed 0)")
    print(f"wall clock {wall:.0f} s ({jax.devices()[0].platform}, {os.cpu_count()} cores)")

    os.makedirs(args.output_dir, exist_ok=True)
    draw(results, args, os.path.join(args.output_dir, "pretraining.png"))
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({
            "options": {k: v for k, v in vars(args).items() if k not in ("data_dir", "output_dir")},
            "wall_clock_s": wall, "platform": jax.devices()[0].platform,
            "cpu_count": os.cpu_count(), "results": results,
        }, f, indent=1)
    print(f"wrote pretraining.png and results.json in {args.output_dir}")


def run_input(kind, args):
    """Every seed of every arm on one kind of input, plus the reference: the
    two random-init architectures trained on all the pool's labels."""
    start = time.perf_counter()
    pool, pool_y, test_x, test_y = load(args, kind)
    print(f"\n== {kind} inputs: pool {len(pool)} ({pool_y.mean():.1%} lesion), test "
          f"{len(test_x)} ({test_y.mean():.1%} lesion), D = {pool.shape[1]}; data in "
          f"{time.perf_counter() - start:.1f} s")
    runs = []
    for seed in range(args.seeds):
        run = run_seed(seed, pool, pool_y, test_x, test_y, args)
        runs.append(run)
        print(f"seed {seed}: {args.labelled} labelled ({run['labelled_positives']} lesion); "
              + "; ".join(f"{k} {v:.1f} s" for k, v in run["timing"].items()))
        for arm in ARMS:
            r = run["results"][arm]
            print(f"  {arm:<15} test AUROC {r['auroc']:.3f}  accuracy {r['accuracy']:.3f}  "
                  f"last train loss {r['train_loss_last']:.3f}")
    summary = {}
    for arm in ARMS:
        row = {}
        for metric in ("auroc", "accuracy"):
            values = np.array([run["results"][arm][metric] for run in runs])
            row[metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))
                           if len(values) > 1 else 0.0, "values": values.tolist()}
        summary[arm] = row

    # Reference: how far do these dense architectures get with every label?
    all_labels = {}
    key = jax.random.key(0)
    for arm, model in (
        ("dbn_random", DBNClassifier(num_classes=2, hidden_sizes=tuple(args.hidden), threshold=None)),
        ("mlp_random", MLP(num_outputs=2, hidden_sizes=tuple(args.hidden))),
    ):
        params = model.init(jax.random.fold_in(key, 0), pool[:1], train=False)["params"]
        all_labels[arm], _ = finetune(
            model, params, pool, pool_y, test_x, test_y, args, jax.random.fold_in(key, 3),
            steps=args.reference_steps, batch_size=args.reference_batch_size,
        )
        print(f"  reference {arm} on all {len(pool)} labels ({args.reference_steps} steps of "
              f"{args.reference_batch_size}): test AUROC {all_labels[arm]['auroc']:.3f}")
    return {"summary": summary, "all_labels": all_labels, "runs": runs,
            "seconds": time.perf_counter() - start}


def draw(results, args, path):
    colors = dict(zip(ARMS, ("C0", "C1", "C2", "C3")))
    figure, axes = plt.subplots(
        len(results), 2, figsize=(11, 4 * len(results)), squeeze=False
    )
    for (kind, result), (left, right) in zip(results.items(), axes):
        runs, summary = result["runs"], result["summary"]
        for index, arm in enumerate(ARMS):
            steps = np.array([s for s, _ in runs[0]["curves"][arm]])
            values = np.array([[v for _, v in run["curves"][arm]] for run in runs])
            mean, std = values.mean(0), values.std(0)
            left.plot(steps, mean, color=colors[arm], label=LABELS[arm],
                      ls="-" if "pretrained" in arm else "--")
            left.fill_between(steps, mean - std, mean + std, color=colors[arm], alpha=0.15)
            finals = summary[arm]["auroc"]["values"]
            right.bar(index, np.mean(finals), color=colors[arm], alpha=0.6, capsize=4,
                      yerr=np.std(finals, ddof=1) if len(finals) > 1 else 0)
            right.scatter([index] * len(finals), finals, color="k", s=12, zorder=3)
        for arm, row in result["all_labels"].items():
            right.axhline(row["auroc"], color=colors[arm], ls=":", lw=1.2,
                          label=f"{LABELS[arm]}, all {args.pool} labels")
        left.axhline(0.5, color="gray", lw=0.6)
        left.set(xlabel="fine-tuning step", ylabel="test AUROC (mean ± std over seeds)",
                 title=f"{kind} inputs: {args.labelled} labelled slices, {args.pool} "
                       f"unlabelled, {args.test} test")
        left.legend(fontsize=7)
        right.set_xticks(range(len(ARMS)), [LABELS[a].replace(", ", ",\n") for a in ARMS],
                         fontsize=7)
        right.set(ylabel=f"test AUROC after {args.steps} steps", ylim=(0.4, 0.8),
                  title=f"{kind} inputs: final test AUROC ({args.seeds} seeds, dots: each)")
        right.axhline(0.5, color="gray", lw=0.6)
        right.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
