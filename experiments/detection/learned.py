"""Scores trained detector runs (``experiment=detection_pixel``,
``detection_centernet``, ...) on the 2D phantom lesions the way the CAD baseline
is scored: best validation checkpoint, FROC / CPM on the test split (the same
500 slices, the same hit rule), AP, inference time per image and parameters.
For pixel-classification runs it also scores the component-mean score beside
the peak score, on validation (to choose) and on test; other runs on test only. Writes
``learned_results.json`` and ``froc_learned.png`` (with the CAD baseline's
random-forest operating points from ``results.json``) next to this file.

    PYTHONPATH=$PWD python experiments/detection/learned.py \\
        --run pixel=runs/detection_pixel/experiment=detection_pixel \\
        --run centernet=runs/detection_centernet/experiment=detection_centernet
"""

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np
from omegaconf import OmegaConf

from medjax.config.run import build_run
from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.state import init_state
from medjax.engine.step import compile_steps
from medjax.metrics import detection as metrics
from medjax.viz.detection import plot_froc

HERE = os.path.dirname(os.path.abspath(__file__))


def host_outputs(task, state, data, split, mesh):
    """Every example of ``split`` once: the task's host outputs, concatenated,
    and the seconds per image of the evaluation step (after compilation)."""
    _, eval_fn = compile_steps(task, mesh)
    parts, seconds, images = [], 0.0, 0
    batches = pipeline.eval_batches(
        data.source(split),
        batch_size=data.eval_batch_size,
        convert=data.convert,
        keys=task.batch_keys,
        num_threads=data.num_threads,
    )
    for i, batch in enumerate(batches):
        batch = pipeline.to_devices(batch, sharding.batch_sharding(mesh))
        start = time.perf_counter()
        _, outputs = eval_fn(state, batch)
        outputs, valid = jax.device_get((outputs, batch["valid"]))
        if i:  # the first batch compiles
            seconds += time.perf_counter() - start
            images += int(valid.sum())
        parts.append({k: np.asarray(v)[valid] for k, v in outputs.items()})
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return joined, seconds / max(images, 1)


def score(task, host):
    result = task.split_metrics(host)
    curve = metrics.froc(task.matches(host), bootstrap=200, seed=0)
    result["cpm_interval"] = list(curve["cpm_interval"])
    return result, curve


def score_run(name, run_dir, mesh, *, alternatives=True):
    """The test scores of a run's best validation-CPM checkpoint: ``{label:
    (entry, curve)}``, ``entry`` with ``run_dir``, ``step``, ``parameters``,
    ``seconds_per_image`` and the ``test`` metrics (``cpm_interval`` added),
    ``curve`` the test FROC. With ``alternatives``, a pixel-classification run
    is scored with its other candidate score too (on validation, to choose,
    and on test)."""
    cfg = OmegaConf.load(os.path.join(run_dir, "config.yaml"))
    task, model, tx, data, *_ = build_run(cfg)
    state = init_state(model, tx, data, task, mesh, cfg.seed)
    state, step = restore_checkpoint(
        state, run_dir, "best", best_metric=cfg.trainer.best_metric or "cpm"
    )
    params = sum(x.size for x in jax.tree.leaves(state.params))
    variants = {name: task}
    if alternatives and hasattr(task, "component_threshold"):
        other = "component_mean" if task.score == "peak" else "peak"
        variants[f"{name} ({other})"] = dataclasses.replace(task, score=other)
    scored = {}
    for label, variant in variants.items():
        entry = {"run_dir": run_dir, "step": step, "parameters": int(params)}
        # Validation only where it chooses between variants (the runs'
        # own validation metrics are in their metrics.jsonl).
        splits = ("validation", "test") if len(variants) > 1 else ("test",)
        for split in splits:
            host, seconds = host_outputs(variant, state, data, split, mesh)
            entry[split], curve = score(variant, host)
            if split == "test":
                entry["seconds_per_image"] = seconds
                scored[label] = (entry, curve)
        test = entry["test"]
        chosen = entry.get("validation", {}).get("cpm")
        print(
            f"{label}: step {step}, "
            + (f"validation CPM {chosen:.3f}, " if chosen is not None else "")
            + f"test CPM {test['cpm']:.3f} [{test['cpm_interval'][0]:.3f}, "
            f"{test['cpm_interval'][1]:.3f}], AP50 {test['ap50']:.3f}, "
            f"AP {test['ap']:.3f}, {1e3 * entry['seconds_per_image']:.2f} ms/image, "
            f"{params} parameters",
            flush=True,
        )
    return scored


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, help="name=run_dir")
    parser.add_argument("--out", default=os.path.join(HERE, "learned_results.json"))
    args = parser.parse_args()
    results, curves = {}, {}
    mesh = sharding.data_mesh()
    for item in args.run:
        name, run_dir = item.split("=", 1)
        for label, (entry, curve) in score_run(name, run_dir, mesh).items():
            results[label], curves[label] = entry, curve
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2, default=float)
    cad = os.path.join(HERE, "results.json")
    if os.path.exists(cad):  # the CAD's mean operating points as a curve
        with open(cad) as f:
            forest = json.load(f)["summary"]["random_forest"]
        sens = np.asarray([float(str(s).split()[0]) for s in forest["sensitivities"]])
        rates = np.asarray(metrics.LUNA16_FP_RATES)
        curves["CAD, random forest"] = {
            "fps": rates,
            "sensitivity": sens,
            "fp_rates": rates,
            "sensitivities": sens,
            "cpm": float(sens.mean()),
        }
    plot_froc(
        curves,
        os.path.join(os.path.dirname(args.out), "froc_learned.png"),
        "2D phantom lesions, test split (500 slices)",
    )


if __name__ == "__main__":
    main()
