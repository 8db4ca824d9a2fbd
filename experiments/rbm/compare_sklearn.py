"""medjax's RBM beside scikit-learn's BernoulliRBM on the same binarised phantoms.

Both learn the same data with the same algorithm and settings: persistent
contrastive divergence with one Gibbs step (scikit-learn's "stochastic maximum
likelihood"), ``--hidden`` hidden units, plain SGD at ``--lr`` on the mean gradient,
batches of ``--batch-size`` in the same fixed order every epoch (scikit-learn does
not shuffle), weights drawn from N(0, 0.01^2), biases zero, ``--batch-size``
persistent chains. medjax trains through its one ``train_step`` (the RBM's
free-energy loss, ``medjax.tasks.generative.RBMTask``); a third row, medjax with
plain CD-1, shows what persistence buys.

Per epoch it prints the pseudo-log-likelihood of each model on the training images
and on held-out ones, and the seconds the epoch's updates took (no evaluation
inside; medjax's compilation is timed apart). Pseudo-likelihood two ways, on every
model's weights alike:

- ``exact``: ``sum_i log p(v_i | v_-i)`` over all D pixels
  (``RBM.pseudo_log_likelihood``);
- ``sklearn``: ``BernoulliRBM.score_samples`` (D times one randomly flipped pixel's
  term, ``random_state=0``), what ``BernoulliRBM(verbose=True)`` prints; its
  expectation is the exact value.

Writes ``pseudo_likelihood.png``, ``samples.png`` and ``results.json`` next to this
file (or to ``--output-dir``).

    python experiments/rbm/compare_sklearn.py [--images 3000] [--epochs 10]
"""

import argparse
import json
import os
import tempfile
import time

from medjax import viz  # noqa: F401

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.neural_network import BernoulliRBM
from sklearn.utils import check_random_state, gen_even_slices
from threadpoolctl import threadpool_limits

from medjax.data import pipeline
from medjax.data.datasets.phantoms import phantoms
from medjax.engine import sharding
from medjax.engine.state import create_train_state
from medjax.engine.step import compile_steps
from medjax.models.rbm import RBM, draw_samples
from medjax.tasks.generative import RBMTask
from medjax.viz.generative import save_image_grid

HERE = os.path.dirname(os.path.abspath(__file__))


def load_images(num_train, num_test, image_size, data_dir):
    """Binarised phantom slices (``image > 0``, i.e. brighter than 40 HU), as
    ``RBMTask`` gives them to the model: ``[N, D]`` float32 for each split."""
    data = phantoms(
        image_size=image_size, data_dir=data_dir,
        split_sizes={"train": num_train, "validation": num_test, "test": 1},
    )
    task = RBMTask()
    splits = []
    for split, count in (("train", num_train), ("validation", num_test)):
        batch = pipeline.read_examples(data.source(split), range(count), data.convert, ("image",))
        splits.append(np.asarray(task.inputs(batch)).reshape(count, -1))
    return splits


class SklearnPCD:
    """``BernoulliRBM.fit`` unrolled one epoch at a time (its own ``_fit`` update,
    initialisation and batch slices, exactly as ``fit`` runs them), so that its
    weights can be scored after every epoch."""

    def __init__(self, data, hidden, lr, batch_size, seed):
        self.rbm = BernoulliRBM(
            n_components=hidden, learning_rate=lr, batch_size=batch_size, random_state=seed
        )
        self.rng = check_random_state(seed)
        rbm = self.rbm
        rbm.components_ = np.asarray(
            self.rng.normal(0, 0.01, (hidden, data.shape[1])), order="F", dtype=data.dtype
        )
        rbm._n_features_out = hidden
        rbm.n_features_in_ = data.shape[1]
        rbm.intercept_hidden_ = np.zeros(hidden, dtype=data.dtype)
        rbm.intercept_visible_ = np.zeros(data.shape[1], dtype=data.dtype)
        rbm.h_samples_ = np.zeros((batch_size, hidden), dtype=data.dtype)
        n_batches = int(np.ceil(len(data) / batch_size))
        self.slices = list(gen_even_slices(n_batches * batch_size, n_batches, n_samples=len(data)))
        self.data = data

    def epoch(self):
        for batch_slice in self.slices:
            self.rbm._fit(self.data[batch_slice], self.rng)

    def params(self):
        return {
            "kernel": self.rbm.components_.T.astype(np.float32),
            "visible_bias": self.rbm.intercept_visible_.astype(np.float32),
            "hidden_bias": self.rbm.intercept_hidden_.astype(np.float32),
        }


class MedjaxRBM:
    """An RBM trained by medjax's ``train_step`` (jitted by ``compile_steps``) on
    the same batches."""

    def __init__(self, data, hidden, lr, batch_size, seed, persistent):
        self.model = RBM(num_hidden=hidden, persistent=persistent, num_chains=batch_size)
        self.task = RBMTask(threshold=0.5)  # the data are 0/1 already
        mesh = sharding.data_mesh(jax.devices()[:1])
        self.state = create_train_state(
            self.model, optax.sgd(lr), data[:1], jax.random.key(seed)
        )
        self.key = jax.random.key(seed + 1)
        self.batches = [
            {"image": data[i : i + batch_size], "valid": np.ones(batch_size, bool)}
            for i in range(0, len(data) - batch_size + 1, batch_size)
        ]
        train_fn, _ = compile_steps(self.task, mesh)
        start = time.perf_counter()
        self.train_fn = train_fn.lower(self.state, self.batches[0], self.key).compile()
        self.compile_seconds = time.perf_counter() - start

    def epoch(self):
        for batch in self.batches:
            self.state, metrics = self.train_fn(self.state, batch, self.key)
        jax.block_until_ready(self.state.params)

    def params(self):
        return jax.tree.map(np.asarray, self.state.params)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="training images")
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--blas-threads", type=int, default=1,
        help="OpenBLAS threads for scikit-learn (0: its default). On a shared 2-core "
        "machine its default threads spin against each other: ~100x slower updates",
    )
    parser.add_argument("--data-dir", default=os.environ.get("MEDJAX_DATA"))
    parser.add_argument("--output-dir", default=HERE)
    args = parser.parse_args()
    if args.blas_threads:
        threadpool_limits(limits=args.blas_threads, user_api="blas")
    data_dir = args.data_dir or os.path.join(tempfile.gettempdir(), "medjax_rbm_data")

    start = time.perf_counter()
    train, test = load_images(args.images, args.test_images, args.image_size, data_dir)
    print(f"{len(train)} training and {len(test)} held-out binarised {args.image_size}x"
          f"{args.image_size} phantoms (mean pixel {train.mean():.3f}) "
          f"in {time.perf_counter() - start:.1f} s; {jax.devices()[0].platform}, "
          f"{os.cpu_count()} cores")

    scorer = RBM(num_hidden=args.hidden)
    exact = jax.jit(
        lambda params, v: scorer.apply({"params": params}, v, method=RBM.pseudo_log_likelihood)
    )
    reference = BernoulliRBM(n_components=args.hidden)

    def scores(params):
        row = {}
        for name, v in (("train", train), ("test", test)):
            row[f"exact_{name}"] = float(np.mean(np.concatenate([
                np.asarray(exact(params, v[i : i + 500])) for i in range(0, len(v), 500)
            ])))
            reference.components_ = params["kernel"].T.astype(np.float64)
            reference.intercept_visible_ = params["visible_bias"].astype(np.float64)
            reference.intercept_hidden_ = params["hidden_bias"].astype(np.float64)
            reference.n_features_in_, reference.random_state = v.shape[1], 0
            row[f"sklearn_{name}"] = float(reference.score_samples(v.astype(np.float64)).mean())
        return row

    options = dict(hidden=args.hidden, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    models = {
        "scikit-learn BernoulliRBM (PCD-1)": SklearnPCD(train.astype(np.float64), **options),
        "medjax RBM (PCD-1)": MedjaxRBM(train, persistent=True, **options),
        "medjax RBM (CD-1)": MedjaxRBM(train, persistent=False, **options),
    }
    for name, model in models.items():
        if hasattr(model, "compile_seconds"):
            print(f"{name}: train_step compiled in {model.compile_seconds:.2f} s")

    history = {name: [] for name in models}
    untrained = scores(models["medjax RBM (PCD-1)"].params())
    header = (f"{'epoch':>5}  {'model':<34} {'s/epoch':>8} {'exact PLL train':>15} "
              f"{'exact PLL test':>14} {'sklearn PLL train':>17} {'sklearn PLL test':>16}")
    print(f"untrained (zero biases, W ~ N(0, 0.01^2)): exact PLL train "
          f"{untrained['exact_train']:.1f} (-D log 2 = {-train.shape[1] * np.log(2):.1f})")
    print(header)
    for epoch in range(1, args.epochs + 1):
        for name, model in models.items():
            start = time.perf_counter()
            model.epoch()
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, "seconds": seconds, **scores(model.params())}
            history[name].append(row)
            print(f"{epoch:>5}  {name:<34} {seconds:>8.3f} {row['exact_train']:>15.1f} "
                  f"{row['exact_test']:>14.1f} {row['sklearn_train']:>17.1f} "
                  f"{row['sklearn_test']:>16.1f}")

    print("\nsummary (s/epoch: median over epochs)")
    for name, rows in history.items():
        seconds = np.median([r["seconds"] for r in rows])
        last = rows[-1]
        print(f"  {name:<34} {seconds:.3f} s/epoch ({len(train) / seconds:,.0f} images/s); "
              f"final exact PLL train {last['exact_train']:.1f}, test {last['exact_test']:.1f}")

    os.makedirs(args.output_dir, exist_ok=True)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, rows), color in zip(history.items(), ("C0", "C1", "C2")):
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["exact_train"] for r in rows], "-o", color=color, ms=3, label=f"{name}, train")
        axes[0].plot(epochs, [r["exact_test"] for r in rows], "--", color=color, label="held out")
        axes[1].plot(epochs, [r["seconds"] for r in rows], "-o", color=color, ms=3, label=name)
    axes[0].set(xlabel="epoch", ylabel="exact pseudo-log-likelihood (nats / image)",
                title=f"{len(train)} binarised {args.image_size}x{args.image_size} phantoms")
    axes[1].set(xlabel="epoch", ylabel="seconds per epoch", title="training time", yscale="log")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(os.path.join(args.output_dir, "pseudo_likelihood.png"), dpi=110)
    plt.close(figure)

    # Samples: 1000 Gibbs steps from noise with each PCD model's weights, above
    # held-out images.
    shape = (args.image_size, args.image_size)
    rows = [test[:8].reshape(8, *shape)]
    for name in ("medjax RBM (PCD-1)", "scikit-learn BernoulliRBM (PCD-1)"):
        params = models[name].params()
        rows.append(draw_samples(scorer, {"params": params}, jax.random.key(args.seed), 8, 1000, shape))
    save_image_grid(
        np.concatenate(rows), os.path.join(args.output_dir, "samples.png"), columns=8,
        title="held-out images; samples (1000 Gibbs steps from noise): medjax PCD-1, scikit-learn",
    )
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump({"options": vars(args) | {"data_dir": None}, "untrained": untrained,
                   "history": history}, f, indent=1)
    print(f"wrote pseudo_likelihood.png, samples.png and results.json in {args.output_dir}")


if __name__ == "__main__":
    main()
