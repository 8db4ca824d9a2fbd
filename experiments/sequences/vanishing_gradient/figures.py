"""Figures and tables of the vanishing-gradient ablation from its results.json.

python experiments/sequences/vanishing_gradient/figures.py   # redraw only
"""

import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from runner import mean_sd

NAMES = {"rnn": "simple RNN", "gru": "GRU", "lstm": "LSTM"}
COLOURS = {"rnn": "C3", "gru": "C0", "lstm": "C2"}
CURVE_WINDOW = 25


def rows_of(results, cell):
    return sorted(
        (r for r in results["grid"] if r["cell"] == cell), key=lambda r: r["distance"]
    )


def cells_of(results):
    return [c for c in NAMES if any(r["cell"] == c for r in results["grid"])]


def draw_accuracy(results, path):
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401  (sets the backend before pyplot)

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for cell in cells_of(results):
        rows = rows_of(results, cell)
        # Cells a little apart on the axis, so that equal accuracies stay visible.
        shift = {"rnn": 1.0, "gru": 0.96, "lstm": 1.04}[cell]
        ks = [r["distance"] * shift for r in rows]
        acc = np.array([r["accuracy"] for r in rows])  # [K, S]
        ax.errorbar(
            ks,
            acc.mean(1),
            yerr=acc.std(1, ddof=1) if acc.shape[1] > 1 else None,
            color=COLOURS[cell],
            marker="o",
            capsize=3,
            label=NAMES[cell],
        )
        for k, values in zip(ks, acc):
            ax.scatter([k] * len(values), values, color=COLOURS[cell], s=8, alpha=0.5)
    for i, row in enumerate(results.get("controls", [])):
        ax.scatter(
            [row["distance"] * 1.07 ** (i + 1)],
            [np.mean(row["accuracy"])],
            marker="x",
            color=COLOURS[row["cell"]],
            alpha=0.8,
        )
    if results.get("controls"):
        ax.scatter([], [], marker="x", color="grey", label="controls at the longest k")
    ax.axhline(0.25, color="grey", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k: frames from the cue to the end")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("distant cue: accuracy vs k (3 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_gradients(results, path):
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401

    cells = cells_of(results)
    fig, axes = plt.subplots(
        1, len(cells), figsize=(4 * len(cells), 3.4), sharey=True, squeeze=False
    )
    for ax, cell in zip(axes[0], cells):
        row = rows_of(results, cell)[-1]  # the longest distance
        for key, style, label in (
            ("gradient_norms_init", "--", "at initialisation"),
            ("gradient_norms_trained", "-", "after training"),
        ):
            norms = np.array(row[key])  # [S, T]
            distance = np.arange(norms.shape[1], 0, -1)  # frame t is T - t from the end
            geometric = np.exp(np.log(np.maximum(norms, 1e-38)).mean(0))
            ax.plot(distance, geometric, style, color=COLOURS[cell], label=label)
        ax.axvline(
            row["distance"], color="grey", ls=":", label=f"cue (k={row['distance']})"
        )
        ax.set_yscale("log")
        ax.set_xlabel("distance of the frame from the end")
        ax.set_title(f"{NAMES[cell]} (test accuracy {np.mean(row['accuracy']):.2f})")
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("mean ||dL/dx_t|| (geometric mean of seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_losses(results, path):
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401

    cells = cells_of(results)
    panels = len(cells) + bool(results.get("controls"))
    fig, axes = plt.subplots(
        1, panels, figsize=(3.6 * panels, 3.2), sharey=True, squeeze=False
    )
    for ax, cell in zip(axes[0], cells):
        rows = rows_of(results, cell)
        for i, row in enumerate(rows):
            curve = np.array(row["loss_curve"]).mean(0)
            steps = (np.arange(len(curve)) + 1) * CURVE_WINDOW
            ax.plot(steps, curve, color=f"C{i}", label=f"k={row['distance']}")
        ax.set_title(NAMES[cell])
    if results.get("controls"):
        ax = axes[0, -1]
        grid_row = rows_of(results, "rnn")[-1] if "rnn" in cells else None
        lines = ([("RNN, the grid's run", grid_row)] if grid_row else []) + [
            (f"{NAMES[r['cell']]}, {r['name']}", r) for r in results["controls"]
        ]
        for i, (name, row) in enumerate(lines):
            curve = np.array(row["loss_curve"]).mean(0)
            steps = (np.arange(len(curve)) + 1) * CURVE_WINDOW
            ax.plot(steps, curve, color=f"C{i}", label=name)
        ax.set_title(f"controls at k={results['controls'][0]['distance']}")
    for ax in axes[0]:
        ax.axhline(math.log(4), color="grey", ls=":")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel(f"training loss (mean of {CURVE_WINDOW} steps, seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_all(results, out_dir):
    draw_accuracy(results, os.path.join(out_dir, "accuracy.png"))
    draw_gradients(results, os.path.join(out_dir, "gradients.png"))
    draw_losses(results, os.path.join(out_dir, "losses.png"))


def print_tables(results):
    cells = cells_of(results)
    ks = [r["distance"] for r in rows_of(results, cells[0])]
    print("| cell | hidden | parameters | " + " | ".join(f"k = {k}" for k in ks) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in ks) + " |")
    for cell in cells:
        rows = rows_of(results, cell)
        print(
            f"| {NAMES[cell]} | {rows[0]['features']} | {rows[0]['parameters']:,} | "
            + " | ".join(mean_sd(r["accuracy"]) for r in rows)
            + " |"
        )
    print()
    print("| cell | " + " | ".join(f"k = {k}" for k in ks) + " |")
    print("| --- | " + " | ".join("---:" for _ in ks) + " |")
    for cell in cells:
        rows = rows_of(results, cell)
        print(
            f"| {NAMES[cell]} | "
            + " | ".join(f"{np.mean(r['final_loss']):.3f}" for r in rows)
            + " |"
        )
    if results.get("controls"):
        print()
        longest = results["controls"][0]["distance"]
        print(
            f"| control at k = {longest} | parameters | steps | test accuracy "
            "| final loss |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in results["controls"]:
            print(
                f"| {NAMES[r['cell']]}: {r['name']} | {r['parameters']:,} | {r['steps']} | "
                f"{mean_sd(r['accuracy'])} | {np.mean(r['final_loss']):.3f} |"
            )
    seconds = sum(r["seconds"] for r in results["grid"] + results.get("controls", []))
    print(f"\ntraining and evaluation: {seconds / 60:.1f} min")


if __name__ == "__main__":
    with open(os.path.join(HERE, "results.json")) as f:
        loaded = json.load(f)
    draw_all(loaded, HERE)
    print_tables(loaded)
