"""A study's table from a Hydra multirun of ``medjax-train``: one row per
variant (the overrides that differ between jobs, the seed left out), each
metric's mean ± sample sd over the variant's seeds.

A multirun directory (``runs/<name>/multirun`` by default) holds one run
directory per job, each with Hydra's ``.hydra/overrides.yaml`` (the job's
command-line overrides), medjax's ``config.yaml`` (the resolved config: its
``seed``), ``summary.json`` (the validation metrics of the best checkpoint)
and, once ``medjax-eval`` has run there, ``eval.json`` (a split's metrics).
"""

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import yaml

from medjax import files
from medjax.errors import RunDirectoryError

SEED = "seed"


@dataclasses.dataclass
class Job:
    """One finished run of the sweep."""

    run_dir: str
    overrides: dict[str, str]  # key -> value as given on the command line
    seed: int
    metrics: dict[str, dict[str, Any]]  # split -> metrics


def _overrides(run_dir: str) -> dict[str, str]:
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    with open(path) as f:
        given = yaml.safe_load(f) or []
    pairs = {}
    for item in given:
        key, _, value = str(item).partition("=")
        pairs[key.lstrip("+~")] = value
    return pairs


#: Numbers of ``summary.json`` that describe the run rather than a split;
#: every split's row has them too (e.g. ``--metrics auroc parameters``).
RUN_FIELDS = ("parameters", "train_images_per_second", "steps", "best_checkpoint_step")


def _metrics(run_dir: str) -> dict[str, dict[str, Any]]:
    """``{"validation": best checkpoint's metrics, <split>: eval.json's}``,
    each with ``RUN_FIELDS``."""
    found, run = {}, {}
    summary = os.path.join(run_dir, "summary.json")
    if os.path.isfile(summary):
        with open(summary) as f:
            content = json.load(f)
        run = {k: content[k] for k in RUN_FIELDS if content.get(k) is not None}
        best = content.get("best") or (content.get("final") or {}).get("validation")
        if best:
            found["validation"] = best
    evaluation = os.path.join(run_dir, "eval.json")
    if os.path.isfile(evaluation):
        with open(evaluation) as f:
            content = json.load(f)
        found[content["split"]] = content["metrics"]
    return {split: {**run, **metrics} for split, metrics in found.items()}


def collect(directory: str) -> list[Job]:
    """The jobs below ``directory`` (a multirun directory): every folder with
    a ``.hydra/overrides.yaml`` and a ``config.yaml``.

    Raises:
        RunDirectoryError: no such job there.
    """
    if not os.path.isdir(directory):
        raise RunDirectoryError(f"{directory}: no such directory")
    jobs = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in (".hydra", "checkpoints", "figures",
                                                     "tensorboard"))
        if "config.yaml" in names and os.path.isfile(
                os.path.join(root, ".hydra", "overrides.yaml")):
            with open(os.path.join(root, "config.yaml")) as f:
                seed = int((yaml.safe_load(f) or {}).get(SEED, 0))
            jobs.append(Job(root, _overrides(root), seed, _metrics(root)))
    if not jobs:
        raise RunDirectoryError(
            f"{directory}: no medjax-train runs below it (expected a multirun directory, "
            "e.g. runs/<name>/multirun, whose jobs hold .hydra/overrides.yaml and config.yaml)"
        )
    return jobs


def variant_keys(jobs: Sequence[Job]) -> list[str]:
    """The override keys whose values differ between jobs, the seed left out."""
    keys = sorted({k for job in jobs for k in job.overrides} - {SEED})
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value), of the
    finite values."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if not len(values):
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(jobs: Sequence[Job], metrics: Sequence[str], split: str) -> list[dict]:
    """One row per variant, in the order first met: ``variant`` (its label),
    ``seeds``, and per metric ``<metric>_mean``, ``<metric>_sd`` and
    ``<metric>_values`` (by seed).

    Raises:
        RunDirectoryError: a job lacks ``split``'s metrics or one of ``metrics``.
    """
    keys = variant_keys(jobs)
    groups: dict[str, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.seed):
        label = ", ".join(f"{k}={job.overrides.get(k, '(default)')}" for k in keys) or "all"
        groups.setdefault(label, []).append(job)
    rows = []
    for label, members in groups.items():
        row = {"variant": label, "seeds": [job.seed for job in members]}
        for metric in metrics:
            values = []
            for job in members:
                found = job.metrics.get(split)
                if found is None:
                    hint = (f"run medjax-eval run_dir={job.run_dir} split={split}, or "
                            "medjax-report --evaluate" if split != "validation"
                            else "the run did not finish")
                    raise RunDirectoryError(f"{job.run_dir}: no {split} metrics ({hint})")
                if metric not in found:
                    raise RunDirectoryError(
                        f"{job.run_dir}: no {split} metric {metric!r}; it has "
                        f"{', '.join(sorted(k for k in found if k != 'split'))}"
                    )
                values.append(found[metric])
            row[f"{metric}_mean"], row[f"{metric}_sd"] = mean_sd(values)
            row[f"{metric}_values"] = values
        rows.append(row)
    return rows


def _cell(mean: float, sd: float) -> str:
    """4 decimals for metrics; counts and rates (parameters, images/s) whole."""
    if math.isfinite(mean) and abs(mean) >= 100:
        return f"{mean:,.0f} ± {sd:,.0f}"
    return f"{mean:.4f} ± {sd:.4f}"


def markdown(rows: Sequence[dict], metrics: Sequence[str], split: str) -> str:
    lines = ["| variant | seeds | " + " | ".join(f"{m} ({split})" for m in metrics) + " |",
             "| --- | ---: |" + " ---: |" * len(metrics)]
    for row in rows:
        cells = [_cell(row[f"{m}_mean"], row[f"{m}_sd"]) for m in metrics]
        lines.append(f"| {row['variant']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict], metrics: Sequence[str], split: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["variant", "split", "seeds",
                     *[f"{m}_{part}" for m in metrics for part in ("mean", "sd")]])
    for row in rows:
        writer.writerow([row["variant"], split, " ".join(map(str, row["seeds"])),
                         *[repr(row[f"{m}_{part}"]) for m in metrics
                           for part in ("mean", "sd")]])
    return out.getvalue()


def bar_figure(rows: Sequence[dict], metrics: Sequence[str], split: str, path: str) -> None:
    """One panel per metric: a bar per variant (mean), its seeds as dots, ± sd."""
    import matplotlib.pyplot as plt

    from medjax import viz  # noqa: F401  (the backend, before pyplot)

    fig, axes = plt.subplots(1, len(metrics), figsize=(1.2 + 3.2 * len(metrics),
                                                       0.9 + 0.45 * len(rows)),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, row in enumerate(rows):
            ax.barh(i, row[f"{metric}_mean"], xerr=row[f"{metric}_sd"], color=f"C{i % 10}",
                    alpha=0.5, capsize=3)
            ax.scatter(row[f"{metric}_values"], [i] * len(row[f"{metric}_values"]),
                       color=f"C{i % 10}", s=14, zorder=3)
        ax.set_title(f"{metric} ({split})", fontsize=9)
        ax.set_yticks(range(len(rows)), [r["variant"] for r in rows] if ax is axes[0][0]
                      else [""] * len(rows), fontsize=7)
        ax.invert_yaxis()
    fig.suptitle("bars: mean over seeds ± sd, dots: seeds", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def default_metrics(jobs: Sequence[Job]) -> list[str]:
    """The metric that ranked the runs' checkpoints (``summary.json``'s
    ``best_metric``: the task's own unless ``trainer.best_metric`` was set)."""
    for job in jobs:
        path = os.path.join(job.run_dir, "summary.json")
        if os.path.isfile(path):
            with open(path) as f:
                metric = json.load(f).get("best_metric")
            if metric:
                return [metric]
    raise RunDirectoryError("no finished run names its metric: give --metrics")


def write_report(directory: str, metrics: Sequence[str], split: str = "validation",
                 out: str | None = None) -> dict[str, str]:
    """``report.md``, ``report.csv`` and ``report.png`` of the multirun in
    ``directory`` (written to ``out``, default ``directory``); returns their
    paths and the Markdown table."""
    rows = summarise(collect(directory), metrics, split)
    out = out or directory
    os.makedirs(out, exist_ok=True)
    table = markdown(rows, metrics, split)
    paths = {name: os.path.join(out, f"report.{name}") for name in ("md", "csv", "png")}
    files.write_text(paths["md"], table)
    files.write_text(paths["csv"], csv_text(rows, metrics, split))
    bar_figure(rows, metrics, split, paths["png"])
    return {**paths, "table": table}
