"""Classical CAD baseline on the torso phantoms, W400 L40: LoG blob candidates,
hand-crafted features, a random forest (and gradient boosting beside it), scored
by LUNA16's FROC / CPM on the test split. 2D slices (``torso2d``, 64^2) by
default; ``--volumes`` for the 3D study's volumes (``torso3d``, 32^3, the
splits of ``conf/data/phantoms_detection3d.yaml``).

Candidates and features are computed once per image (the costly stage; the
same for every seed), then each seed draws its own training subset and
classifier ``random_state``. Writes ``results.json``, ``froc.png`` and
``missed_lesions.png`` next to this file (``results_3d.json``, ... for volumes)
and prints the README's table.

    PYTHONPATH=$PWD python experiments/detection/cad_baseline.py [--volumes]
"""

import argparse
import json
import os
import pickle
import time

import matplotlib.pyplot as plt
import numpy as np

import medjax.viz
from medjax.data import pipeline
from medjax.data.datasets.phantoms import phantoms
from medjax.data.datasets.phantoms.torso import LESION_TYPES
from medjax.metrics import detection as metrics
from medjax.tasks.detection import CADDetector, Detections, lesions_from_fields
from medjax.tasks.detection.cad_features import window
from medjax.viz.detection import plot_froc

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = (
    "image",
    "lesion_mask",
    "lesion_centers",
    "lesion_radii",
    "lesion_types",
    "lesion_valid",
)
SIZE_BINS = (0.0, 2.0, 3.0, 4.0, np.inf)  # lesion radius, pixels (6.25 mm each)
CLASSIFIER_NAMES = {"random_forest": "random forest", "gradient_boosting": "HGB"}


def load(data, split: str, count: int) -> dict:
    """The raw records (HU, masks, lesion fields) of the first ``count`` cases:
    the CAD windows the HU itself, with the data's window."""
    return pipeline.read_examples(
        data.source(split),
        range(count),
        lambda r: {k: np.asarray(v) for k, v in r.items()},
        KEYS,
    )


def extract(cad: CADDetector, batch: dict, cache: str | None, name: str):
    """Candidates and features of every image, and seconds per image."""
    path = cache and os.path.join(cache, f"{name}_{len(batch['image'])}.pkl")
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    start = time.perf_counter()
    extracted = cad.extract(batch["image"][..., 0])
    seconds = (time.perf_counter() - start) / len(batch["image"])
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump((extracted, seconds), f)
    return extracted, seconds


def lesion_types(batch: dict) -> np.ndarray:
    return np.concatenate(
        [t[v] for t, v in zip(batch["lesion_types"], batch["lesion_valid"])]
    )


def evaluate(detections, truth, types) -> dict:
    """FROC, CPM, sensitivity by size and by lesion type (at 1 FP/image)."""
    matches = [
        metrics.match_candidates(
            d.points, d.scores, t.centers, t.radii, instance_map=t.instance_map
        )
        for d, t in zip(detections, truth)
    ]
    result = metrics.froc(matches)
    at_one = metrics.score_threshold_at_fp_rate(matches, 1.0)
    by_size = metrics.sensitivity_by_size(matches, SIZE_BINS, threshold=at_one)
    scores = np.concatenate([m.lesion_scores for m in matches])
    detected = np.isfinite(scores) & (scores >= at_one)
    by_type = {LESION_TYPES[k]: float(detected[types == k].mean()) for k in (1, 2, 3)}
    return {
        "froc": result,
        "matches": matches,
        "threshold_at_1fp": at_one,
        "cpm": result["cpm"],
        "sensitivities": result["sensitivities"].tolist(),
        "sensitivity_by_size_at_1fp": by_size["sensitivity"].tolist(),
        "sensitivity_by_type_at_1fp": by_type,
    }


def candidate_recall(extracted, truth, types) -> dict:
    """Lesions hit by any candidate: the ceiling no classifier can pass."""
    matches = [
        metrics.match_candidates(
            c.points,
            np.ones(len(c.points)),
            t.centers,
            t.radii,
            instance_map=t.instance_map,
        )
        for (c, _), t in zip(extracted, truth)
    ]
    by_size = metrics.sensitivity_by_size(matches, SIZE_BINS)
    hit = np.isfinite(np.concatenate([m.lesion_scores for m in matches]))
    return {
        "overall": float(hit.mean()),
        "by_size": by_size["sensitivity"].tolist(),
        "num_lesions_by_size": by_size["num_lesions"].tolist(),
        "by_type": {LESION_TYPES[k]: float(hit[types == k].mean()) for k in (1, 2, 3)},
        "candidates_per_image": float(np.mean([len(c.points) for c, _ in extracted])),
    }


def plot_missed(batch, detections, evaluation, path, cad, limit=24):
    """Crops around lesions missed at 1 FP/image: truth circle (green), the
    candidates above the threshold (red +) and below it (yellow x)."""
    threshold = evaluation["threshold_at_1fp"]
    missed = []
    for i, (match, valid) in enumerate(
        zip(evaluation["matches"], batch["lesion_valid"])
    ):
        for row in np.flatnonzero(~(match.lesion_scores >= threshold)):
            missed.append((i, np.flatnonzero(valid)[row], match.lesion_scores[row]))
    columns = 8
    rows = max(1, -(-min(limit, len(missed)) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (i, l, score) in zip(np.ravel(axes), missed[:limit]):
        hu = batch["image"][i, ..., 0]
        centre, radius = batch["lesion_centers"][i, l], batch["lesion_radii"][i, l]
        points = detections[i].points
        if hu.ndim == 3:  # the axial slice through the lesion's centre
            depth = int(np.clip(np.rint(centre[0]), 0, hu.shape[0] - 1))
            near = np.abs(points[:, 0] - depth) <= max(radius, 1.0)
            hu, centre, points = hu[depth], centre[1:], points[near, 1:]
            scores = detections[i].scores[near]
        else:
            scores = detections[i].scores
        low = np.clip(np.rint(centre).astype(int) - 8, 0, np.asarray(hu.shape) - 16)
        crop = window(hu, cad.window_center, cad.window_width)[
            low[0] : low[0] + 16, low[1] : low[1] + 16
        ]
        ax.imshow(crop, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(
            plt.Circle(
                centre[::-1] - low[::-1], radius, fill=False, color="lime", lw=0.8
            )
        )
        points = points - low
        above = scores >= threshold
        inside = np.all((points >= -0.5) & (points < 15.5), axis=1)
        ax.plot(*points[inside & above].T[::-1], "r+", ms=5)
        ax.plot(*points[inside & ~above].T[::-1], "yx", ms=3)
        kind = LESION_TYPES[batch["lesion_types"][i, l]].replace("liver_", "")
        why = "no cand." if not np.isfinite(score) else f"p={score:.2f}"
        ax.set_title(f"{kind}\nr={radius:.1f} {why}", fontsize=6)
    fig.suptitle(f"missed at 1 FP/image ({len(missed)} lesions)"
                 + (", the axial slice through each centre" if batch["image"].ndim == 5 else ""),
                 fontsize=8)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=120)


def mean_sd(values) -> str:
    values = np.asarray(values, np.float64)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", action="store_true",
                        help="torso3d 32^3 (600 train, 200 test volumes), not 2D slices")
    parser.add_argument("--train-images", type=int, help="default: 1600 slices, 600 volumes")
    parser.add_argument(
        "--subset", type=int, help="train images per seed (default: 3/4 of --train-images)"
    )
    parser.add_argument("--test-images", type=int, help="default: 500 slices, 200 volumes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--radius-range", type=float, nargs=2,
        help="LoG blob radii, voxels (default: 8.75-40 mm, (1.4, 6.4) at 64^2, (0.7, 3.2) at 32^3)",
    )
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIER_NAMES))
    parser.add_argument(
        "--cache",
        default="/tmp/medjax_cad_cache",
        help="candidates and features per split and size; clear it after changing the CAD",
    )
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    if args.volumes:  # conf/data/phantoms_detection3d.yaml, data.image_size=32
        splits = {"train": 600, "validation": 100, "test": 200}
        data = phantoms(kind="torso3d", image_size=32, split_sizes=splits)
        suffix, what = "_3d", "torso3d 32³, {} test volumes"
    else:  # conf/data/phantoms2d.yaml
        splits = {"train": 1600, "test": 500}
        data = phantoms(kind="torso2d", image_size=64)
        suffix, what = "", "torso2d 64², {} test slices"
    args.train_images = args.train_images or splits["train"]
    args.test_images = args.test_images or splits["test"]
    args.subset = args.subset or args.train_images * 3 // 4
    scale = 6.25 / data.spacing[0]  # the 64^2 slices' pixel, mm
    args.radius_range = args.radius_range or [1.4 * scale, 6.4 * scale]
    cad = CADDetector(
        window_center=data.normalize.center,
        window_width=data.normalize.width,
        radius_range=tuple(args.radius_range),
    )
    train, test = (
        load(data, "train", args.train_images),
        load(data, "test", args.test_images),
    )
    train_truth = lesions_from_fields(
        train["lesion_centers"],
        train["lesion_radii"],
        train["lesion_valid"],
        train["lesion_mask"],
    )
    test_truth = lesions_from_fields(
        test["lesion_centers"],
        test["lesion_radii"],
        test["lesion_valid"],
        test["lesion_mask"],
    )
    test_types = lesion_types(test)
    train_extracted, _ = extract(cad, train, args.cache, f"train{suffix}")
    test_extracted, extract_seconds = extract(cad, test, args.cache, f"test{suffix}")
    print(f"candidates and features: {extract_seconds:.3f} s/image", flush=True)
    recall = candidate_recall(test_extracted, test_truth, test_types)
    print("candidate recall", json.dumps(recall), flush=True)

    # The same candidates scored at random: what the classifier adds. With
    # ~100 candidates per slice some land on a lesion by chance alone.
    chance = []
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        scored = [
            Detections(c.points, rng.random(len(c.points)), c.radii)
            for c, _ in test_extracted
        ]
        chance.append(evaluate(scored, test_truth, test_types)["cpm"])
    print("random scores CPM", mean_sd(chance), flush=True)

    runs, frocs, figure_done = [], {}, False
    for classifier in args.classifiers:
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            subset = np.sort(rng.choice(args.train_images, args.subset, replace=False))
            model = CADDetector(
                window_center=cad.window_center,
                window_width=cad.window_width,
                radius_range=cad.radius_range,
                classifier=classifier,
                n_estimators=args.n_estimators,
                random_state=seed,
            )
            start = time.perf_counter()
            model.fit_extracted(
                [train_extracted[i] for i in subset], [train_truth[i] for i in subset]
            )
            fit_seconds = time.perf_counter() - start
            start = time.perf_counter()
            detections = model.score_extracted(test_extracted)
            score_seconds = (time.perf_counter() - start) / len(test_extracted)
            evaluation = evaluate(detections, test_truth, test_types)
            name = f"{CLASSIFIER_NAMES[classifier]}, seed {seed}"
            frocs[name] = evaluation["froc"]
            if not figure_done:
                plot_missed(
                    test,
                    detections,
                    evaluation,
                    os.path.join(args.out, f"missed_lesions{suffix}.png"),
                    model,
                )
                figure_done = True
            run = {k: v for k, v in evaluation.items() if k not in ("froc", "matches")}
            run.update(
                classifier=classifier,
                seed=seed,
                fit_seconds=fit_seconds,
                seconds_per_image=extract_seconds + score_seconds,
            )
            runs.append(run)
            print(name, f"CPM {run['cpm']:.3f}", f"fit {fit_seconds:.0f} s", flush=True)
    plot_froc(
        frocs,
        os.path.join(args.out, f"froc{suffix}.png"),
        title="classical CAD, " + what.format(args.test_images),
    )

    summary = {}
    for classifier in args.classifiers:
        mine = [r for r in runs if r["classifier"] == classifier]
        summary[classifier] = {
            "cpm": mean_sd([r["cpm"] for r in mine]),
            "sensitivities": [
                mean_sd(col) for col in zip(*[r["sensitivities"] for r in mine])
            ],
            "by_size_at_1fp": [
                mean_sd(col)
                for col in zip(*[r["sensitivity_by_size_at_1fp"] for r in mine])
            ],
            "by_type_at_1fp": {
                k: mean_sd([r["sensitivity_by_type_at_1fp"][k] for r in mine])
                for k in mine[0]["sensitivity_by_type_at_1fp"]
            },
            "seconds_per_image": mean_sd([r["seconds_per_image"] for r in mine]),
        }
    with open(os.path.join(args.out, f"results{suffix}.json"), "w") as f:
        json.dump(
            {
                "args": vars(args),
                "candidate_recall": recall,
                "runs": runs,
                "summary": summary,
                "random_scores_cpm": chance,
                "extract_seconds_per_image": extract_seconds,
            },
            f,
            indent=1,
        )
    rates = ["1/8", "1/4", "1/2", "1", "2", "4", "8"]
    print("\n| classifier | CPM | " + " | ".join(rates) + " | s/image |")
    print("|---" * (len(rates) + 3) + "|")
    for classifier, s in summary.items():
        print(
            f"| {CLASSIFIER_NAMES[classifier]} | {s['cpm']} | "
            + " | ".join(s["sensitivities"])
            + f" | {s['seconds_per_image']} |"
        )
    print(f"| random scores (same candidates) | {mean_sd(chance)} |")
    print(
        "\nby size at 1 FP/image (radius bins",
        SIZE_BINS,
        "):",
        json.dumps({k: s["by_size_at_1fp"] for k, s in summary.items()}),
    )
    print(
        "by type at 1 FP/image:",
        json.dumps({k: s["by_type_at_1fp"] for k, s in summary.items()}),
    )


if __name__ == "__main__":
    main()
