"""Shared by the experiment scripts: run ``medjax-train`` / ``medjax-eval`` exactly
as a user would (one process per run), collect test metrics, and draw and tabulate
them over seeds."""

import json
import re
import os
import subprocess
import sys
import time
from typing import Sequence

import numpy as np

BIN = os.path.dirname(sys.executable)


def _command(program: str, args: Sequence[str]) -> str:
    print("$", program, " ".join(args), flush=True)
    result = subprocess.run([os.path.join(BIN, program), *args], capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"{program} failed:\n{result.stderr[-4000:]}")
    return result.stdout + result.stderr


def train(overrides: Sequence[str], run_dir: str, *, fresh: bool = True) -> dict:
    """Trains into ``run_dir`` (removed first when ``fresh``); returns the run's
    ``summary.json`` with ``wall_seconds`` of the whole process and the model's
    ``parameters`` added."""
    if fresh and os.path.isdir(run_dir):
        import shutil

        shutil.rmtree(run_dir)
    start = time.perf_counter()
    output = _command("medjax-train", [*overrides, f"hydra.run.dir={run_dir}"])
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    summary["wall_seconds"] = time.perf_counter() - start
    found = re.search(r"medjax: ([\d,]+) parameters", output)
    summary["parameters"] = int(found.group(1).replace(",", "")) if found else None
    return summary


def evaluate(run_dir: str, split: str = "test", checkpoint: str = "best") -> dict:
    """``medjax-eval`` of the best checkpoint (by the run's validation metric)."""
    _command("medjax-eval", [f"run_dir={run_dir}", f"split={split}",
                             f"checkpoint={checkpoint}"])
    with open(os.path.join(run_dir, "eval.json")) as f:
        return json.load(f)


def validation_curve(run_dir: str, metric: str) -> tuple[list[int], list[float]]:
    from medjax.engine.reporting import read_metrics  # drops a torn last line

    records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    rows = [r for r in records if r["split"] == "validation"]
    return [r["step"] for r in rows], [r[metric] for r in rows]


def model_cost(overrides: Sequence[str], inputs, *, compiled: bool = True) -> tuple[int, float]:
    """Parameters of the model that ``medjax-train`` overrides build, and XLA's
    FLOP count of its forward pass on ``inputs``: a cost that does not depend on
    what else the machine is running (``medjax-train`` prints the parameters only
    with its progress bar).

    Args:
        overrides: of ``conf/train.yaml``, as on the command line.
        inputs: what the model reads, as arrays or ``jax.ShapeDtypeStruct``; a
            dict is a batch, read through the task's ``inputs``.
        compiled: count the optimised program (True) or the lowered one.
    """
    import jax

    from medjax.config import compose
    from medjax.config.run import build_run

    run = build_run(compose("train", list(overrides)))

    def model_inputs(batch):
        return run.task.inputs(batch) if isinstance(batch, dict) else batch

    variables = jax.eval_shape(
        lambda b: run.model.init(jax.random.key(0), model_inputs(b), train=False), inputs
    )
    forward = jax.jit(lambda v, b: run.model.apply(v, model_inputs(b), train=False))
    lowered = forward.lower(variables, inputs)
    cost = (lowered.compile() if compiled else lowered).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    parameters = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    return int(parameters), float(cost["flops"])


def mean_sd(values: Sequence[float]) -> str:
    values = np.asarray(values, float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {sd:.3f}"


def bar_plot(results: list[dict], variants: dict[str, str], metrics: Sequence[str],
             path: str, title: str, ylim=(0.4, 1.0)) -> None:
    """One panel per metric: a bar per variant at the mean, a dot per seed."""
    from medjax import viz  # noqa: F401  (sets the backend before pyplot)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 2.2 * len(variants) * len(metrics) / 2, 3.4),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, variant in enumerate(variants):
            values = [r[metric] for r in results if r["variant"] == variant]
            if not values:
                continue
            ax.bar(i, np.mean(values), color=f"C{i}", alpha=0.5)
            ax.scatter([i] * len(values), values, color=f"C{i}", zorder=3, s=14)
        ax.set_xticks(range(len(variants)), variants.values(), rotation=20, ha="right",
                      fontsize=8)
        ax.set_ylabel(f"test {metric.replace('_', ' ')}")
        ax.set_ylim(*ylim)
    fig.suptitle(title + " (bars: mean; dots: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def arguments(doc: str, runs: str, variants: dict, steps: int | None = None):
    """The common command line of the experiment scripts: ``--seeds``,
    ``--variants``, ``--runs`` and (when the study has a default) ``--steps``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(variants),
                        choices=list(variants))
    parser.add_argument("--runs", default=runs)
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps)
    return parser


def scored_run(overrides: Sequence[str], run_dir: str, *,
               include_overrides: bool = True) -> dict:
    """Trains ``overrides`` into ``run_dir`` and scores the test split at the best
    validation checkpoint: the test metrics, ``parameters``, training images/s
    (``train_images_per_second``), ``wall_seconds`` and ``best_step``, with the
    ``overrides`` and ``run_dir``."""
    summary = train(overrides, run_dir)
    row = {"overrides": list(overrides)} if include_overrides else {}
    return {**row, "run_dir": run_dir, **evaluate(run_dir)["metrics"],
            "parameters": summary["parameters"],
            "train_images_per_second": summary["train_images_per_second"],
            "wall_seconds": summary["wall_seconds"],
            "best_step": summary["best_checkpoint_step"]}


def load_rows(path: str) -> list[dict]:
    """The rows of a study's results file (none before its first run)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def append_row(path: str, row: dict, *, replace: bool = False) -> list[dict]:
    """Adds ``row`` to the results file as it is now (two study processes may
    share it), written to a temporary name and renamed so that a stopped study
    keeps its last rows; returns all rows. With ``replace``, a row of the same
    ``variant`` and ``seed`` is dropped first (a rerun replaces its row)."""
    rows = load_rows(path)
    if replace:
        rows = [r for r in rows if (r["variant"], r["seed"]) != (row["variant"], row["seed"])]
    rows.append(row)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(temporary, path)
    return rows


def run_variants(experiment: str, variants: dict, names: Sequence[str],
                 seeds: Sequence[int], runs: str, extra: Sequence[str] = (),
                 show: Sequence[str] = ("accuracy", "auroc")) -> list[dict]:
    """Trains ``experiment=<experiment>`` plus each variant's overrides
    (``variants[name] = (label, overrides)``) for every seed into
    ``<runs>/<name>_seed<k>``, and scores the test split at the best validation
    checkpoint. Returns one row per run: the test metrics, the parameters,
    training images/s, wall clock and best step."""
    results = []
    for variant in names:
        for seed in seeds:
            run_dir = os.path.join(runs, f"{variant}_seed{seed}")
            overrides = [f"experiment={experiment}", f"seed={seed}", *extra,
                         *variants[variant][1]]
            row = {"variant": variant, "seed": seed,
                   **scored_run(overrides, run_dir, include_overrides=False)}
            print({k: row[k] for k in ("variant", "seed", *show)}, flush=True)
            results.append(row)
    return results
