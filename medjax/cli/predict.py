"""``medjax-predict run_dir=DIR input=PATH output=PATH``: apply a trained run to
an image file and write the result in the input's format and geometry (label
maps), or as CSV and JSON of candidates (``points``: detection, landmarks).

The run's task says what a prediction is (``Task.prediction_role``: a
``label_map`` is written like the input; None: the task writes no files) and
how to turn the model's outputs into it (``Task.decode``)."""

import sys

import hydra
import numpy as np
from omegaconf import DictConfig

from medjax.cli.common import (
    CONFIG_PATH, quote_path_arguments, reports_errors, require_run_dir, start_from_run,
)
from medjax.config.run import build_run
from medjax.errors import ConfigError


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="predict")
@reports_errors("medjax-predict")
def _predict(cfg: DictConfig) -> None:
    from medjax.data import io
    from medjax.data import schema as roles
    from medjax.inferers import segmentation

    run_dir = cfg.run_dir
    train_cfg = start_from_run("medjax-predict", cfg)
    overlay = cfg.overlay or _overlay_path(str(cfg.output))
    task, model, tx, data, *_ = build_run(train_cfg)
    role = task.prediction_role()
    if role is None:
        raise ConfigError(
            f"run_dir={run_dir}: this run's task ({type(task).__name__}) writes "
            "no prediction files"
        )
    if role == roles.POINTS:
        _predict_points(cfg, train_cfg, task, model, tx, data, overlay)
        return
    if role != roles.LABEL_MAP:
        raise ConfigError(
            f"run_dir={run_dir}: medjax-predict writes label maps and points; this "
            f"run's task predicts a {role}"
        )
    # The input is read before the model is restored: a bad file is one line
    # before anything is compiled.
    volume = io.load_image(cfg.input)
    segmenter = segmentation.load_segmenter(
        task, model, tx, data, run_dir, cfg.checkpoint, seed=train_cfg.seed,
        best_metric=train_cfg.trainer.best_metric, best_mode=train_cfg.trainer.best_mode,
    )
    _, labels, written = segmentation.segment_file(segmenter, volume, cfg.output, overlay)
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
    # Paths and counts only: nothing read from the input's header (a DICOM
    # series' patient name, ID or birth date) is printed.
    print(f"segmented {cfg.input} {tuple(labels.shape)} with step {segmenter.step} of {run_dir}")
    print(f"voxels per label: {counts}")
    print(f"wrote {written} and {overlay}")


def _predict_points(cfg, train_cfg, task, model, tx, data, overlay: str) -> None:
    """Detection and landmark runs: the valid candidates as CSV and JSON
    (``medjax.inferers.points``) and an overlay PNG."""
    from medjax.data import io
    from medjax.inferers import points

    if not str(cfg.output).lower().endswith(".csv"):
        raise ConfigError(
            f"output={cfg.output}: this run predicts points, written as CSV; "
            "expected a .csv path"
        )
    volume = io.load_image(cfg.input)  # a bad file: one line before compiling
    locator = points.load_locator(
        task, model, tx, data, cfg.run_dir, cfg.checkpoint, seed=train_cfg.seed,
        best_metric=train_cfg.trainer.best_metric, best_mode=train_cfg.trainer.best_mode,
    )
    threshold = getattr(task, "draw_threshold", 0.0)
    found, written = points.locate_file(locator, volume, cfg.output, overlay,
                                        threshold=threshold)
    print(f"located {len(found.scores)} candidates in {cfg.input} with step "
          f"{locator.step} of {cfg.run_dir}")
    print(f"wrote {written[0]}, {written[1]} and {overlay}")


def _overlay_path(output: str) -> str:
    stem = output.rstrip("/")
    for suffix in (".nii.gz", ".nii", ".png", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + "_overlay.png"


def main() -> None:
    require_run_dir("medjax-predict", sys.argv[1:])
    sys.argv[1:] = quote_path_arguments(
        sys.argv[1:], keys=("run_dir", "input", "output", "overlay")
    )
    _predict()
