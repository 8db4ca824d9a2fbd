"""The registration study: every method on the same pairs, one table.

Pair sets:
* ``monomodal``: 100 torso2d 64² test phantoms, each registered to itself under
  a random affine + smooth elastic deformation (the learned runs' own
  evaluation pairs: a function of the example, so every method sees the same);
* ``ct_mr``: the same with the MR twin as the moving image;
* ``mni``: nilearn's real MNI152 T1 (2 mm) under random known warps, grey/white
  matter labels and 20 landmarks moved along (``mni_known_warp.py``).

Rows: no registration; iterative affine (NCC; SSD, NCC and MI across
modalities); iterative
dense with SSD, NCC, local NCC, MI and (CT<->MR) the learned patch similarity;
SimpleITK affine and affine + B-spline (Mattes MI); the learned models
(affine net, VoxelMorph-style, diffeomorphic; trained by ``medjax-train
experiment=registration_*``, one run per seed, mean ± sd over the seeds).
Columns: Dice of warped organ labels, TRE (mm), % folding (det J <= 0), SD of
log|J|, HD95 (mm), seconds per pair on this machine (iterative and learned:
the 100 pairs as one vmapped batch after compilation; SimpleITK: pair by pair).

    python experiments/registration/study.py --runs runs          # all sections
    python experiments/registration/study.py --sections monomodal --pairs 20

Rows go to ``results_study.json``; the table to ``study_table.md``; the figure
(Dice against seconds per pair) to ``study.png``.
"""

import argparse
import glob
import json
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.inferers.registration import normalize
from medjax.models.similarity import similarity_net_small
from medjax.tasks.registration import IterativeRegistration
from medjax.tasks.registration import learned_similarity as similarity_training

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import learned  # noqa: E402
import mni_known_warp  # noqa: E402
import simpleitk_baseline  # noqa: E402
from runner import mean_sd  # noqa: E402

#: pair set -> (the experiment whose task and data draw its pairs, its similarity)
PAIR_SETS = {
    "monomodal": ("registration_voxelmorph", "lncc"),
    "ct_mr": ("registration_voxelmorph_ctmr", "mi"),
}
#: learned rows: (method, experiment, extra overrides in the run's name, pair set)
LEARNED = (
    ("affine net", "registration_affine", "", "monomodal"),
    ("VoxelMorph-style", "registration_voxelmorph", "", "monomodal"),
    ("VoxelMorph-style + Dice term", "registration_voxelmorph", "task.dice_weight=1.0",
     "monomodal"),
    ("diffeomorphic", "registration_voxelmorph_diff", "", "monomodal"),
    ("diffeomorphic (MI)", "registration_voxelmorph_ctmr", "", "ct_mr"),
)
#: the iterative dense method's settings (learned.py's): adam per pyramid level
DENSE = {"levels": (4, 2, 1), "iterations": 100, "learning_rate": 0.05,
         "regularization": 0.1}
AFFINE = {"levels": (4, 2, 1), "iterations": (200, 100, 50), "learning_rate": 0.1}
COLUMNS = ("dice", "tre", "folding", "sd_log_jacobian", "hd95", "seconds_per_pair")


def phantom_pairs(pair_set: str, count: int):
    experiment, _ = PAIR_SETS[pair_set]
    run = build_run(compose("train", [f"experiment={experiment}"]))
    return run.task, run.data, learned.test_pairs(run.task, run.data, count)


def _identity_row(task, pairs, pair_set):
    zero = jnp.zeros(pairs["fixed"].shape[:-1] + (pairs["fixed"].ndim - 2,))
    return learned.row("no registration", pair_set, task, zero, pairs, 0.0)


def affine_row(task, pairs, pair_set: str, linear: str) -> dict:
    """Iterative affine registration with similarity ``linear``."""
    method = IterativeRegistration("affine", linear, **AFFINE)
    out, seconds = learned.timed(lambda f, m: method(f, m)["displacement"], pairs["fixed"],
                                 pairs["moving"], repeats=1)
    return learned.row(f"iterative affine ({linear})", pair_set, task, out, pairs, seconds)


def dense_row(task, pairs, pair_set: str, name: str, learned_loss=None) -> dict:
    """Iterative dense registration with similarity ``name`` (``learned``:
    ``learned_loss`` on percentile-normalised images, as it was trained)."""
    fixed, moving = pairs["fixed"], pairs["moving"]
    if name == "learned":
        fixed, moving = _percentiles(fixed), _percentiles(moving)
    method = IterativeRegistration("dense", "ssd" if name == "learned" else name, **DENSE)
    out, seconds = learned.timed(
        lambda f, m: method(f, m, similarity_loss=learned_loss)["displacement"], fixed,
        moving, repeats=1)
    return learned.row(f"iterative dense ({name})", pair_set, task, out, pairs, seconds)


def _percentiles(images):
    return jnp.asarray(np.stack([normalize(np.asarray(x)) for x in images]))


def train_similarity(data, seed: int, count: int = 400, steps: int = 2000):
    """The patch-pair CNN trained on ``count`` training slices' CT and MR twins."""
    source = data.source("train")
    indices = np.arange(min(count, len(source)))
    from medjax.data import pipeline

    batch = pipeline.read_examples(source, indices, data.convert, ("image", "mr_image"))
    ct = np.stack([normalize(x[..., 0]) for x in batch["image"]])
    mr = np.stack([normalize(x[..., 0]) for x in batch["mr_image"]])
    return similarity_training.train_learned_similarity(
        ct, mr, model=similarity_net_small(), steps=steps, seed=seed,
        progress=f"learned similarity, seed {seed}")


def simpleitk_rows(task, pairs, pair_set, spacing):
    rows = []
    fixed = np.asarray(pairs["fixed"][..., 0])
    moving = np.asarray(pairs["moving"][..., 0])
    for kind in ("affine", "bspline"):
        fields, seconds = [], 0.0
        for k in range(len(fixed)):
            out = simpleitk_baseline.register(fixed[k], moving[k], transform=kind,
                                              spacing=spacing, grid_spacing=8, seed=k)
            fields.append(out["displacement"])
            seconds += out["seconds"]
        label = "SimpleITK affine (MI)" if kind == "affine" else "SimpleITK affine + B-spline (MI)"
        rows.append(learned.row(label, pair_set, task, jnp.asarray(np.stack(fields)), pairs,
                                seconds))
    return rows


def run_dirs(runs: str, experiment: str, extra: str) -> list[str]:
    """The seed runs of ``experiment`` (with exactly the overrides ``extra``)."""
    found = []
    for path in sorted(glob.glob(os.path.join(runs, experiment, "*", "config.yaml"))):
        name = os.path.basename(os.path.dirname(path))
        parts = set(name.split(","))
        wanted = {f"experiment={experiment}"} | ({extra} if extra else set())
        if {p for p in parts if not p.startswith("seed=")} == wanted:
            found.append(os.path.dirname(path))
    return found


def learned_rows(task, pairs, pair_set, runs: str) -> list[dict]:
    rows = []
    for method, experiment, extra, wanted in LEARNED:
        if wanted != pair_set:
            continue
        for run_dir in run_dirs(runs, experiment, extra):
            cfg, _, apply, step = learned.restored(run_dir)
            outputs, seconds = learned.timed(apply, task.inputs(pairs))
            rows.append(learned.row(method, pair_set, task, outputs, pairs, seconds,
                                    run_dir=run_dir, step=step, seed=cfg.get("seed", 0)))
    return rows


def mni_rows(count: int) -> list[dict]:
    """The known-warp pairs of the real MNI152 T1: medjax's iterative methods and
    SimpleITK, pair by pair (``mni_known_warp``)."""
    from medjax.data.datasets import templates

    template = templates.mni152(2)
    labels = templates.tissue_labels(template)
    rows = []
    for seed in range(count):
        pair = mni_known_warp.make_pair(template, labels, seed)
        zero = np.zeros(pair["fixed"].shape[:-1] + (3,), np.float32)
        rows.append({"method": "no registration", "pairs": "mni", "pair": seed,
                     **mni_known_warp.score(pair, zero, 0.0)})
        for name, stages in mni_known_warp.MEDJAX.items():
            displacement, seconds = mni_known_warp.run_medjax(stages, pair)
            rows.append({"method": name.replace("medjax ", "iterative "), "pairs": "mni",
                         "pair": seed, **mni_known_warp.score(pair, displacement, seconds)})
            print(json.dumps(rows[-1]), flush=True)
        for kind in ("affine", "bspline"):
            out = simpleitk_baseline.register(
                pair["fixed"][..., 0], pair["moving"][..., 0], transform=kind,
                spacing=mni_known_warp.SPACING, grid_spacing=6, seed=seed)
            label = "SimpleITK affine (MI)" if kind == "affine" else "SimpleITK affine + B-spline (MI)"
            rows.append({"method": label, "pairs": "mni", "pair": seed,
                         **mni_known_warp.score(pair, out["displacement"], out["seconds"])})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per (pair set, method), mean ± sd over seeds (learned)
    or pairs (MNI)."""
    lines = []
    for pair_set in ("monomodal", "ct_mr"):
        chosen = [r for r in rows if r["pairs"] == pair_set]
        if not chosen:
            continue
        lines += [f"\n**{pair_set}** ({chosen[0]['num_pairs']} test pairs)\n",
                  ("| method | seeds | Dice | TRE (mm) | folding (%) | SD log\\|J\\| "
                   "| HD95 (mm) | s / pair |"), "|---|---|---|---|---|---|---|---|"]
        for method in dict.fromkeys(r["method"] for r in chosen):
            group = [r for r in chosen if r["method"] == method]
            cells = [_cell([r[c] for r in group], c) for c in COLUMNS]
            seeds = len(group) if "seed" in group[0] else "-"
            lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    mni = [r for r in rows if r["pairs"] == "mni"]
    if mni:
        pairs = len({r["pair"] for r in mni})
        lines += [f"\n**mni** (MNI152 T1 2 mm, {pairs} known-warp pairs; mean ± sd over pairs)\n",
                  "| method | Dice GM | Dice WM | TRE (mm) | folding (%) | SD log\\|J\\| | s / pair |",
                  "|---|---|---|---|---|---|---|"]
        for method in dict.fromkeys(r["method"] for r in mni):
            group = [r for r in mni if r["method"] == method]
            cells = [_cell([r[c] for r in group], c) for c in
                     ("dice_gm", "dice_wm", "tre_mm", "folding_percent", "sd_log_jacobian",
                      "seconds")]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(values, column) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if column in ("seconds_per_pair", "seconds"):
        mean = float(np.mean(values))
        return "-" if mean == 0 else f"{mean:.3g}"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return mean_sd(values)


def figure(rows: list[dict], path: str) -> None:
    """Dice against seconds per pair (log), one panel per phantom pair set."""
    from medjax import viz  # noqa: F401  (the backend before pyplot)
    import matplotlib.pyplot as plt

    sets = [s for s in PAIR_SETS if any(r["pairs"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(sets), figsize=(8.2 * len(sets), 4.6), squeeze=False)
    for ax, pair_set in zip(axes[0], sets):
        chosen = [r for r in rows if r["pairs"] == pair_set and r["seconds_per_pair"] > 0]
        for i, method in enumerate(dict.fromkeys(r["method"] for r in chosen)):
            group = [r for r in chosen if r["method"] == method]
            x = np.mean([r["seconds_per_pair"] for r in group])
            y = [r["dice"] for r in group]
            marker = "o" if "seed" in group[0] else "s"
            ax.errorbar(x, np.mean(y), yerr=np.std(y, ddof=1) if len(y) > 1 else None,
                        fmt=marker, color=plt.cm.tab20(i % 20), capsize=3, label=method)
        start = next(r for r in rows if r["pairs"] == pair_set)["initial_dice"]
        ax.axhline(start, color="grey", ls=":", lw=1, label="no registration")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per pair (this CPU)")
        ax.set_ylabel("Dice of warped organ labels")
        ax.set_title(pair_set.replace("_", "↔").replace("ct↔mr", "CT↔MR"))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)
    fig.suptitle("Registration study: accuracy against speed (learned: mean ± sd over 3 "
                 "seeds; squares: deterministic methods)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def redraw(path: str) -> None:
    """The table and figure again from a results file (no registration run)."""
    with open(path) as f:
        rows = json.load(f)
    figure(rows, os.path.join(HERE, "study.png"))
    print(table(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs", help="where medjax-train put the runs")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--mni-pairs", type=int, default=3)
    parser.add_argument("--similarity-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="seeds of the learned similarity (none: skip its rows)")
    parser.add_argument("--similarity-steps", type=int, default=2000)
    parser.add_argument("--sections", nargs="+", default=["monomodal", "ct_mr", "mni"],
                        choices=["monomodal", "ct_mr", "mni"])
    parser.add_argument("--output", default=os.path.join(HERE, "results_study.json"))
    args = parser.parse_args()
    rows = []
    if os.path.isfile(args.output):  # other sections' rows are kept
        with open(args.output) as f:
            rows = [r for r in json.load(f) if r["pairs"] not in args.sections]
    for pair_set in [s for s in args.sections if s in PAIR_SETS]:
        task, data, pairs = phantom_pairs(pair_set, args.pairs)
        section = [_identity_row(task, pairs, pair_set)]
        section += learned_rows(task, pairs, pair_set, args.runs)
        linear = ("ssd", "ncc", "mi") if pair_set == "ct_mr" else ("ncc",)
        section += [affine_row(task, pairs, pair_set, name) for name in linear]
        section += [dense_row(task, pairs, pair_set, name)
                    for name in ("ssd", "ncc", "lncc", "mi")]
        if pair_set == "ct_mr":
            for seed in args.similarity_seeds:
                start = time.perf_counter()
                trained = train_similarity(data, seed, steps=args.similarity_steps)
                print(f"learned similarity seed {seed}: trained in "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
                row = dense_row(task, pairs, pair_set, "learned", trained.loss_function())
                row["seed"] = seed
                section.append(row)
        section += simpleitk_rows(task, pairs, pair_set, tuple(data.spacing))
        rows += section
    if "mni" in args.sections:
        rows += mni_rows(args.mni_pairs)
    commit = learned._commit()
    for row in rows:
        row.setdefault("commit", commit)
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=1)
    text = table(rows)
    with open(os.path.join(HERE, "study_table.md"), "w") as f:
        f.write(text)
    figure(rows, os.path.join(HERE, "study.png"))
    print(text)


if __name__ == "__main__":
    main()
