"""Learned registration against the iterative dense method on the same test
pairs: Dice of warped organ labels, TRE (mm), % folding, SD log|J|, HD95 and
seconds per pair on this machine (a batch of pairs, after compilation).

Each ``--run`` is a ``medjax-train task=registration`` run directory (e.g. of
``experiment=registration_voxelmorph``); its best checkpoint is restored and
applied to the first ``--pairs`` test examples, drawn into pairs by the run's
own task (evaluation pairs are a function of the example, so every run with the
same pair options sees the same pairs). ``IterativeRegistration("dense", ...)``
registers the same pairs with the run's similarity. Rows go to
``results_learned.json`` (``--output``), one per method and pair set:

    python experiments/registration/learned.py \\
        --run runs/registration_voxelmorph --run runs/registration_voxelmorph_diff \\
        --run runs/registration_affine --pairs 100
"""

import argparse
import json
import os
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

from medjax.config.run import build_run
from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.state import init_state
from medjax.tasks.registration import IterativeRegistration

HERE = os.path.dirname(os.path.abspath(__file__))


def test_pairs(task, data, count: int):
    """The task's evaluation pairs of the first ``count`` test examples."""
    source = data.source("test")
    indices = np.arange(min(count, len(source)))
    batch = pipeline.read_examples(source, indices, data.convert, task.batch_keys)
    batch["valid"] = np.ones(len(indices), bool)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    return jax.jit(lambda b: task.prepare_batch(None, b, train=False))(batch)


def timed(function, *args, repeats: int = 3) -> tuple[object, float]:
    """``function(*args)`` once to compile, then the best of ``repeats`` runs."""
    result = jax.block_until_ready(function(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        best = min(best, time.perf_counter() - start)
    return result, best


def scores(task, outputs, pairs) -> dict:
    """Means of the per-pair metrics and the split metrics (Dice, TRE, HD95)."""
    _, per_pair = jax.jit(task.loss)(outputs, pairs)
    result = {k: float(np.mean(v)) for k, v in jax.device_get(per_pair).items()}
    host = jax.device_get(jax.jit(task.host_outputs)(outputs, pairs))
    result.update(task.split_metrics(host))
    return result


def row(method, pair_set, task, outputs, pairs, seconds, **extra) -> dict:
    metrics = scores(task, outputs, pairs)
    count = int(pairs["fixed"].shape[0])
    keep = (
        "dice",
        "tre",
        "folding",
        "sd_log_jacobian",
        "hd95",
        "initial_dice",
        "initial_tre",
    )
    result = {
        "method": method,
        "pairs": pair_set,
        "num_pairs": count,
        **{k: metrics.get(k) for k in keep},
        "seconds_per_pair": seconds / count,
        **extra,
    }
    print(json.dumps(result), flush=True)
    return result


def restored(run_dir: str):
    """The run of ``run_dir`` (its config and built parts), its best checkpoint's
    network as a jitted ``apply`` and that checkpoint's step."""
    cfg = OmegaConf.load(os.path.join(run_dir, "config.yaml"))
    run = build_run(cfg)
    mesh = sharding.data_mesh(jax.devices()[:1])
    state = init_state(run.model, run.tx, run.data, run.task, mesh, cfg.get("seed", 0))
    state, step = restore_checkpoint(state, run_dir, "best", best_metric="dice")
    apply = jax.jit(lambda x: state.apply_fn(state.variables(), x, train=False))
    return cfg, run, apply, step


def learned_row(run_dir: str, count: int):
    cfg, run, apply, step = restored(run_dir)
    pairs = test_pairs(run.task, run.data, count)
    inputs = run.task.inputs(pairs)
    outputs, seconds = timed(apply, inputs)
    name = os.path.basename(os.path.normpath(run_dir))
    pair_set = _pair_set(run.task)
    result = row(
        name,
        pair_set,
        run.task,
        outputs,
        pairs,
        seconds,
        model=cfg.model._target_.rsplit(".", 1)[-1],
        step=step,
        similarity=run.task.similarity,
    )
    return result, run.task, pairs


def iterative_row(task, pairs, options: dict):
    method = IterativeRegistration(
        "dense", task.similarity, similarity_options=task.similarity_options, **options
    )
    fixed, moving = pairs["fixed"], pairs["moving"]
    out, seconds = timed(
        lambda f, m: method(f, m)["displacement"], fixed, moving, repeats=1
    )
    return row(
        "iterative_dense",
        _pair_set(task),
        task,
        out,
        pairs,
        seconds,
        similarity=task.similarity,
        options=options,
    )


def _pair_set(task) -> str:
    return "ct_mr" if task.moving_image_key else "monomodal"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=HERE,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        help="a task=registration run directory (repeatable)",
    )
    parser.add_argument("--pairs", type=int, default=100, help="test pairs")
    parser.add_argument(
        "--iterations",
        type=int,
        default=100,
        help="iterative method: adam steps per pyramid level",
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results_learned.json"))
    parser.add_argument(
        "--iterative", nargs="*", default=None,
        help="pair sets (monomodal, ct_mr) to run the iterative method on "
        "(default: those of the runs; none: skip it)",
    )
    parser.add_argument(
        "--append", action="store_true",
        help="keep the output's rows of other (method, pairs) instead of replacing them",
    )
    args = parser.parse_args()
    rows, pair_sets = [], {}
    for run_dir in args.run:
        result, task, pairs = learned_row(run_dir, args.pairs)
        rows.append(result)
        pair_sets.setdefault(_pair_set(task), (task, pairs))
    # The iterative baseline: the lead's dense settings (tests/tasks/registration).
    options = {
        "levels": (4, 2, 1),
        "iterations": args.iterations,
        "learning_rate": 0.05,
        "regularization": 0.1,
    }
    for name, (task, pairs) in pair_sets.items():
        if args.iterative is None or name in args.iterative:
            rows.append(iterative_row(task, pairs, options))
    for result in rows:
        result["commit"] = _commit()
        result["device"] = jax.devices()[0].platform
    if args.append and os.path.isfile(args.output):
        with open(args.output) as f:
            kept = json.load(f)
        new = {(r["method"], r["pairs"]) for r in rows}
        rows = [r for r in kept if (r["method"], r["pairs"]) not in new] + rows
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
