"""Command-line entry points (Hydra): ``medjax-train``, ``medjax-eval``,
``medjax-predict`` and ``medjax-show``.

This is the only module that reads a config; it builds the task, model, data and
optimizer with ``medjax.config.build`` and hands plain objects to the library.
"""

import dataclasses
import json
import logging
import os
import sys

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medjax.config import ConfigError, build

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def build_run(cfg: DictConfig):
    """Task, model, optimizer, data and augmentation of a composed config; bad
    values raise ConfigError before anything is compiled."""
    from medjax.train.loop import check_trainer_options

    check_trainer_options(**OmegaConf.to_container(cfg.trainer, resolve=True))
    task = build(cfg.task, "task")
    model = build(cfg.model, "model")
    tx = build(cfg.optim, "optim", total_steps=cfg.trainer.max_steps)
    data = build(cfg.data, "data")
    augment = build(cfg.augment, "augment") if cfg.get("augment") else None
    if getattr(task, "spacing", False) is None and data.spacing is not None:
        task = dataclasses.replace(task, spacing=data.spacing)  # spacing: null
    return task, model, tx, data, augment


def _quiet_libraries() -> None:
    # Hydra sets the root logger to INFO; orbax and tfds log every save and read
    # through absl at INFO, which would bury the progress bar.
    logging.getLogger("absl").setLevel(logging.WARNING)


def _fail(program: str, error: Exception) -> None:
    sys.exit(f"{program}: error: {error}")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from medjax.train.loop import train  # imports JAX: keep --help fast

    _quiet_libraries()
    run_dir = HydraConfig.get().runtime.output_dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        task, model, tx, data, augment = build_run(cfg)
    except ConfigError as error:
        _fail("medjax-train", error)
    if not resolved["trainer"].get("best_metric"):
        resolved["trainer"]["best_metric"] = getattr(task, "primary_metric", None)
    os.makedirs(run_dir, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), os.path.join(run_dir, "config.yaml"))
    trainer = dict(resolved["trainer"])
    try:
        summary = train(
            task=task, model=model, tx=tx, data=data, augment=augment,
            run_dir=run_dir, seed=cfg.seed, config=resolved, **trainer,
        )
    except ConfigError as error:  # raised by the loop's checks, before compiling
        _fail("medjax-train", error)
    except KeyboardInterrupt:
        sys.exit(130)
    if summary["interrupted"]:
        sys.exit(130)
    best = summary.get("best") or {}
    best_metric = trainer["best_metric"]
    return best.get(best_metric) if best_metric else None


def _run_config(program: str, run_dir: str) -> DictConfig:
    """The resolved config a medjax-train run saved in ``run_dir``."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(config_path):
        _fail(program, FileNotFoundError(
            f"run_dir={run_dir}: no config.yaml (not a medjax run directory)"
        ))
    return OmegaConf.load(config_path)


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="eval")
def _eval(cfg: DictConfig) -> None:
    from medjax.train.loop import evaluate_checkpoint

    _quiet_libraries()
    run_dir = cfg.run_dir
    train_cfg = _run_config("medjax-eval", run_dir)
    if cfg.get("data_dir"):
        train_cfg.data.data_dir = cfg.data_dir
    try:
        task, model, tx, data, _ = build_run(train_cfg)
        result = evaluate_checkpoint(
            task=task, model=model, tx=tx, data=data, run_dir=run_dir,
            split=cfg.split, checkpoint=cfg.checkpoint, seed=train_cfg.seed,
            best_metric=train_cfg.trainer.best_metric, best_mode=train_cfg.trainer.best_mode,
        )
    except (ConfigError, FileNotFoundError) as error:
        _fail("medjax-eval", error)
    path = os.path.join(run_dir, "eval.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="show")
def _show(cfg: DictConfig) -> None:
    import jax
    import numpy as np

    from medjax.data import pipeline
    from medjax.show import augment_for_display, sample_grid

    _quiet_libraries()
    try:
        data = build(cfg.data, "data")
        augment = build(cfg.augment, "augment") if cfg.get("augment") else None
        source = data.source(cfg.split)
    except ConfigError as error:
        _fail("medjax-show", error)
    count = min(int(cfg.num_examples), len(source))
    indices = np.random.default_rng(cfg.seed).choice(len(source), count, replace=False)
    record = source[int(indices[0])]
    batch = pipeline.read_examples(source, indices, data.convert, tuple(record))
    augmented = None
    if augment is not None:
        augmented = augment_for_display(augment, jax.random.key(cfg.seed), batch)
    name = cfg.data.get("kind", "data")
    augment_name = HydraConfig.get().runtime.choices.get("augment", "")
    sample_grid(batch, augmented, cfg.output,
                title=f"{name} {cfg.data.get('image_size', '')} ({cfg.split}); "
                f"augment={augment_name}")
    print(f"wrote {cfg.output}")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="predict")
def _predict(cfg: DictConfig) -> None:
    from medjax.data import io
    from medjax.predict import load_segmenter, write_overlay

    _quiet_libraries()
    run_dir = cfg.run_dir
    train_cfg = _run_config("medjax-predict", run_dir)
    try:
        task, model, tx, data, _ = build_run(train_cfg)
        if not hasattr(task, "predict"):
            raise ConfigError(f"run_dir={run_dir}: a {type(task).__name__} run; medjax-predict needs a segmentation run")
        volume = io.load_image(cfg.input)
        segmenter = load_segmenter(
            task, model, tx, data, run_dir, cfg.checkpoint, seed=train_cfg.seed,
            best_metric=train_cfg.trainer.best_metric, best_mode=train_cfg.trainer.best_mode,
        )
        labels = segmenter(volume)
        written = io.save_like(labels, volume, cfg.output)
    except (ConfigError, FileNotFoundError, io.ImageFormatError) as error:
        _fail("medjax-predict", error)
    overlay = cfg.overlay or _overlay_path(str(cfg.output))
    write_overlay(volume, labels, overlay, segmenter.normalize)
    counts = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
    print(f"segmented {cfg.input} {tuple(labels.shape)} with step {segmenter.step} of {run_dir}")
    print(f"voxels per label: {counts}")
    print(f"wrote {written} and {overlay}")


def _overlay_path(output: str) -> str:
    stem = output.rstrip("/")
    for suffix in (".nii.gz", ".nii", ".png"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + "_overlay.png"


def train_main() -> None:
    _train()


def quote_path_arguments(argv: list[str], keys=("run_dir", "data_dir")) -> list[str]:
    """Quotes ``key=PATH`` arguments for Hydra's override grammar, so that run
    directories named after overrides (``runs/default/model=cnn_tiny,seed=1``)
    can be passed as they are."""
    quoted = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys and value and value[0] not in "'\"":
            value = "'" + value.replace("'", "\\'") + "'"
            arg = f"{key}={value}"
        quoted.append(arg)
    return quoted


def show_main() -> None:
    sys.argv[1:] = quote_path_arguments(sys.argv[1:], keys=("output", "data.data_dir"))
    _show()


def predict_main() -> None:
    sys.argv[1:] = quote_path_arguments(sys.argv[1:], keys=("run_dir", "input", "output", "overlay"))
    _predict()


def eval_main() -> None:
    sys.argv[1:] = quote_path_arguments(sys.argv[1:])
    _eval()
