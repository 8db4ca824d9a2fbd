"""The vanishing-gradient ablation: simple RNN vs GRU vs LSTM on "distant cue"
sequences whose class is written k frames before the end (README.md here).

    python experiments/sequences/vanishing_gradient/run.py [--seeds 0 1 2]
        [--steps 1000] [--distances 4 8 16 32 64] [--cells rnn gru lstm]
        [--no-controls]

Each (cell, k) trains the three seeds at once: one jitted ``fit_arrays`` run
(Adam with ``clip_by_global_norm``, the same for every cell) vmapped over the
seeds, each seed with its own data, initialisation and minibatches. The gated
cells start from the chrono initialisation of their gate biases
(``chrono_gate_init``). Then the controls at the longest distance: for the simple
RNN two other learning rates, three times the steps, and a hidden size giving it
the LSTM's parameter count; for the LSTM and GRU flax's default zero gate biases.
Writes ``results.json`` and the figures (``figures.py``) here and prints the
README's tables.
"""

import argparse
import json
import math
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.data.datasets.memory import distant_cue_sequences
from medjax.engine.fit_arrays import fit_arrays
from medjax.models.sequence.gradients import input_gradient_norms
from medjax.models.sequence.recurrent import RecurrentEncoder

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import mean_sd

NUM_CLASSES = 4  # chance accuracy 0.25, chance loss log 4 = 1.386
LEADING_FRAMES = 4  # distractors before the cue: T = k + 4
HIDDEN = 32
BATCH = 64
LEARNING_RATE = 3e-3
CLIP_NORM = 1.0
# Gated cells start with chrono-initialised gates for memories up to the longest
# distance (chrono_gate_init); the simple RNN has no gate.
CHRONO_HORIZON = 64
TRAIN_SEQUENCES = 16384  # per seed: 1000 steps of 64 see each ~4 times
TEST_SEQUENCES = 2048
GRADIENT_SEQUENCES = 512
CURVE_WINDOW = 25  # steps averaged into one point of a loss curve


class CueClassifier(nn.Module):
    """medjax's RecurrentEncoder over ``x [B, T, F]`` and a Dense head on its
    last output: ``[B, num_classes]`` logits."""

    cell: str
    features: int = HIDDEN
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        summary = RecurrentEncoder(
            cell=self.cell, features=self.features, name="encoder"
        )(x, train=train)
        return nn.Dense(self.num_classes, name="head")(summary)


def chrono_gate_init(params: dict, cell: str, horizon: int, seeds) -> dict:
    """The chrono initialisation (Tallec and Ollivier 2018, "Can recurrent neural
    networks warp time?") of a gated cell's gate biases, per seed.

    flax starts every bias at 0, so the LSTM's forget gate (``hf``) and the
    GRU's update gate (``iz``: ``h' = (1 - z) n + z h``) start at sigmoid(0) = 0.5
    and halve the carried memory at every step: after 64 steps a cue's trace is
    ``0.5^64 ~ 1e-19`` of what it was. Chrono draws each unit's keep-gate bias as
    ``log U(1, horizon - 1)``, giving units memories of 1 to ``horizon`` steps;
    the LSTM's input gate bias is its negative (a unit that keeps long writes
    little). ``horizon <= 1`` leaves flax's zeros. The simple RNN has no gate.

    Args:
        params: parameters of :class:`CueClassifier` with a leading seed axis.
        cell: 'rnn', 'gru' or 'lstm'.
        horizon: the longest memory wanted, in steps.
        seeds: one per row of the leading axis; seed the draws.
    """
    if cell == "rnn" or horizon <= 1:
        return params
    cell_params = dict(params["encoder"]["layer0"]["cell"])
    shape = cell_params["hf" if cell == "lstm" else "iz"]["bias"].shape  # [S, H]
    keep = np.stack(
        [
            np.log(np.random.default_rng([seed, 7]).uniform(1, horizon - 1, shape[1:]))
            for seed in seeds
        ]
    ).astype(np.float32)
    gates = {"hf": keep, "hi": -keep} if cell == "lstm" else {"iz": keep}
    for gate, bias in gates.items():
        cell_params[gate] = {**cell_params[gate], "bias": jnp.asarray(bias)}
    layer = {**params["encoder"]["layer0"], "cell": cell_params}
    return {**params, "encoder": {**params["encoder"], "layer0": layer}}


def data_seed(seed: int, distance: int, split: int) -> int:
    return 10_000 * seed + 100 * distance + split


def train_seeds(cell, distance, seeds, *, steps, learning_rate, features, horizon):
    """Trains one (cell, k) for every seed at once; returns its results."""
    length = distance + LEADING_FRAMES
    model = CueClassifier(cell=cell, features=features)

    def draw(num, split):
        arrays = [
            distant_cue_sequences(
                num,
                distance=distance,
                length=length,
                num_classes=NUM_CLASSES,
                seed=data_seed(seed, distance, split),
            )
            for seed in seeds
        ]
        return tuple(jnp.stack(a) for a in zip(*arrays))  # [S, N, ...]

    train_data, (x_test, y_test) = draw(TRAIN_SEQUENCES, 0), draw(TEST_SEQUENCES, 1)
    init_keys = jnp.stack([jax.random.key(seed) for seed in seeds])
    params = jax.vmap(lambda key: model.init(key, x_test[0, :1])["params"])(init_keys)
    params = chrono_gate_init(params, cell, horizon, seeds)
    tx = optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.adam(learning_rate))

    def loss_fn(p, batch, key):
        x, y = batch
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def fit_one(p, data, key):
        fit = fit_arrays(
            loss_fn,
            p,
            data,
            tx=tx,
            steps=steps,
            batch_size=BATCH,
            key=key,
            steps_per_call=steps,  # one scan: no host round trip a step
        )
        return fit.params, fit.losses

    def apply_fn(variables, x):
        return model.apply(variables, x)

    def evaluate(p, x, y):
        accuracy = jnp.mean(jnp.argmax(apply_fn({"params": p}, x), -1) == y)
        norms = input_gradient_norms(
            apply_fn, {"params": p}, x[:GRADIENT_SEQUENCES], y[:GRADIENT_SEQUENCES]
        )
        return accuracy, norms

    evaluate_all = jax.jit(jax.vmap(evaluate))
    start = time.perf_counter()
    _, norms_init = evaluate_all(params, x_test, y_test)
    train_keys = jnp.stack([jax.random.key(1000 + seed) for seed in seeds])
    trained, losses = jax.jit(jax.vmap(fit_one))(params, train_data, train_keys)
    accuracy, norms_trained = evaluate_all(trained, x_test, y_test)
    accuracy.block_until_ready()
    seconds = time.perf_counter() - start
    losses = np.asarray(losses)
    curve = losses[:, : steps // CURVE_WINDOW * CURVE_WINDOW]
    curve = curve.reshape(len(seeds), -1, CURVE_WINDOW).mean(-1)
    one_seed = jax.tree.map(lambda a: a[0], params)
    return {
        "cell": cell,
        "distance": distance,
        "length": length,
        "features": features,
        "learning_rate": learning_rate,
        "steps": steps,
        "chrono_horizon": horizon if cell != "rnn" else None,
        "parameters": int(sum(a.size for a in jax.tree.leaves(one_seed))),
        "seeds": list(seeds),
        "accuracy": np.asarray(accuracy).tolist(),
        "final_loss": losses[:, -CURVE_WINDOW * 4 :].mean(1).tolist(),
        "loss_curve": curve.tolist(),  # [S, steps / CURVE_WINDOW]
        "gradient_norms_init": np.asarray(norms_init).tolist(),  # [S, T]
        "gradient_norms_trained": np.asarray(norms_trained).tolist(),
        "seconds": seconds,
    }


def controls(steps: int) -> list[dict]:
    """Second chances at the longest distance: for the simple RNN, two other
    learning rates, three times the steps, and the hidden size that gives it the
    LSTM's parameter count; for the gated cells, flax's default (zero) gate
    biases instead of chrono."""
    f = NUM_CLASSES + 1  # inputs a frame
    lstm_params = 4 * (HIDDEN * f + HIDDEN * HIDDEN + HIDDEN)
    # A simple RNN of hidden size h has h^2 + (f + 1) h parameters.
    equal = round((-(f + 1) + math.sqrt((f + 1) ** 2 + 4 * lstm_params)) / 2)
    rnn = {
        "cell": "rnn",
        "learning_rate": LEARNING_RATE,
        "steps": steps,
        "features": HIDDEN,
        "horizon": 0,
    }
    gated = {**rnn, "horizon": 0}
    return [
        {**rnn, "name": "lr 1e-3", "learning_rate": 1e-3},
        {**rnn, "name": "lr 1e-2", "learning_rate": 1e-2},
        {**rnn, "name": f"{3 * steps} steps", "steps": 3 * steps},
        {**rnn, "name": f"hidden {equal} (the LSTM's parameters)", "features": equal},
        {**gated, "cell": "lstm", "name": "flax's zero gate biases"},
        {**gated, "cell": "gru", "name": "flax's zero gate biases"},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--distances", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"])
    parser.add_argument(
        "--chrono-horizon",
        type=int,
        default=CHRONO_HORIZON,
        help="0: flax's default gate biases (zeros)",
    )
    parser.add_argument("--no-controls", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    common = {
        "steps": args.steps,
        "learning_rate": LEARNING_RATE,
        "features": HIDDEN,
        "horizon": args.chrono_horizon,
    }
    results = {"grid": [], "controls": []}

    def save():
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(args.out + ".tmp", args.out)  # a killed run loses nothing written

    for cell in args.cells:
        for distance in args.distances:
            row = train_seeds(cell, distance, args.seeds, **common)
            results["grid"].append(row)
            save()
            print(
                f"{cell} k={distance}: accuracy {mean_sd(row['accuracy'])}, final "
                f"loss {np.mean(row['final_loss']):.3f}, {row['seconds']:.0f} s",
                flush=True,
            )
    if not args.no_controls:
        longest = max(args.distances)
        for control in controls(args.steps):
            name, cell = control.pop("name"), control.pop("cell")
            if cell not in args.cells:
                continue
            row = train_seeds(cell, longest, args.seeds, **control)
            row["name"] = name
            results["controls"].append(row)
            save()
            print(
                f"{cell} k={longest} {name}: accuracy {mean_sd(row['accuracy'])}, final"
                f" loss {np.mean(row['final_loss']):.3f}, {row['seconds']:.0f} s",
                flush=True,
            )
    from figures import draw_all, print_tables

    draw_all(results, HERE)
    print_tables(results)


if __name__ == "__main__":
    main()
