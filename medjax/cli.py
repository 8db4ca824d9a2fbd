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
from typing import Any, Callable, NamedTuple

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medjax.config import ConfigError, build

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


class Run(NamedTuple):
    """The plain objects of one composed config."""

    task: Any
    model: Any
    tx: Any
    data: Any
    augment: Any
    trainer: dict  # trainer options with epochs turned into steps
    initialize: Callable | None  # loads pretrained weights into a fresh state


def build_run(cfg: DictConfig) -> Run:
    """Task, model, optimizer, data, augmentation, trainer options and transfer
    of a composed config; bad values raise ConfigError before anything is
    compiled."""
    from medjax.train.loop import check_trainer_options

    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_trainer_options(**trainer)
    task_node = cfg.task
    balanced = task_node.get("class_weights") == "balanced"
    if balanced:
        task_node = OmegaConf.merge(task_node, {"class_weights": None})
    task = build(task_node, "task")
    model = build(cfg.model, "model")
    data = build(cfg.data, "data")
    augment = build(cfg.augment, "augment") if cfg.get("augment") else None
    if getattr(task, "spacing", False) is None and data.spacing is not None:
        task = dataclasses.replace(task, spacing=data.spacing)  # spacing: null
    if balanced:
        from medjax.tasks.classification import balanced_class_weights

        counts = data.class_counts(data.train_split, task.label_key, task.num_classes)
        task = dataclasses.replace(task, class_weights=balanced_class_weights(counts))
    trainer = steps_from_epochs(trainer, data)
    tx = build(cfg.optim, "optim", total_steps=trainer["max_steps"])
    model, tx, initialize = _transfer(cfg.get("transfer"), model, tx)
    return Run(task, model, tx, data, augment, trainer, initialize)


def steps_from_epochs(trainer: dict, data) -> dict:
    """``trainer`` with ``max_epochs`` and ``eval_every_epochs`` (when set)
    turned into ``max_steps``, ``eval_every`` and ``checkpoint_every`` for
    ``data``'s training split and batch size."""
    trainer = dict(trainer)
    epochs, eval_epochs = trainer.get("max_epochs"), trainer.get("eval_every_epochs")
    if epochs is None and eval_epochs is None:
        return trainer
    from medjax.data.pipeline import steps_per_epoch

    for name, value in (("max_epochs", epochs), ("eval_every_epochs", eval_epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"trainer.{name}: expected a positive integer or null, "
                              f"got {value!r}")
    per_epoch = steps_per_epoch(len(data.source(data.train_split)), data.batch_size)
    if epochs is not None:
        trainer["max_steps"] = epochs * per_epoch
    if eval_epochs is not None:
        trainer["eval_every"] = trainer["checkpoint_every"] = eval_epochs * per_epoch
    return trainer


def _transfer(node, model, tx):
    """Applies ``transfer`` options: the optimizer masks frozen parameters and
    scales the backbone's learning rate, the model freezes their BatchNorm
    statistics, and ``initialize`` loads the checkpoint into a fresh state."""
    if node is None:
        return model, tx, None
    from medjax.train import transfer

    options = OmegaConf.to_container(node, resolve=True)
    mode, checkpoint = options.get("mode", "scratch"), options.get("checkpoint")
    trainable = options.get("trainable_stages")
    factor = float(options.get("backbone_lr_factor", 1.0))
    transfer.check_mode(mode, trainable)
    if mode == "scratch":
        return model, tx, None
    if not checkpoint:
        raise ConfigError(
            f"transfer.mode={mode}: needs transfer.checkpoint (a run directory or one "
            "of its checkpoints/<step> directories)"
        )
    num_stages = len(getattr(model, "widths", ()) or ())
    frozen = transfer.frozen_stages_for(mode, num_stages, trainable)
    if frozen:
        if not hasattr(model, "frozen_stages"):
            raise ConfigError(
                f"transfer.mode={mode}: model {type(model).__name__} cannot freeze its "
                "normalisation statistics (no frozen_stages field)"
            )
        model = model.clone(frozen_stages=frozen)
    tx = transfer.transfer_optimizer(tx, mode, trainable, factor)
    subtrees = options.get("subtrees")

    def initialize(state):
        variables, report = transfer.load_pretrained(
            state.variables(), checkpoint, subtrees
        )
        print("medjax: transfer from " + str(checkpoint) + "\n  "
              + "\n  ".join(report.summary().splitlines()))
        initialize.report = report.to_dict()
        return state.replace(
            params=variables["params"], batch_stats=variables.get("batch_stats", {})
        )

    return model, tx, initialize


def _quiet_libraries() -> None:
    # Hydra sets the root logger to INFO; orbax and tfds log every save and read
    # through absl at INFO, which would bury the progress bar.
    logging.getLogger("absl").setLevel(logging.WARNING)


def _fail(program: str, error: Exception) -> None:
    sys.exit(f"{program}: error: {error}")


def _compilation_cache(cfg: DictConfig) -> None:
    """JAX's persistent compilation cache in ``cfg.compilation_cache`` (null: off)."""
    from medjax.runtime import enable_compilation_cache

    enable_compilation_cache(cfg.get("compilation_cache"))


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from medjax.train.loop import train  # imports JAX: keep --help fast

    _quiet_libraries()
    _compilation_cache(cfg)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        run = build_run(cfg)
    except ConfigError as error:
        _fail("medjax-train", error)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["trainer"] = dict(run.trainer)
    if not resolved["trainer"].get("best_metric"):
        resolved["trainer"]["best_metric"] = getattr(run.task, "primary_metric", None)
    os.makedirs(run_dir, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), os.path.join(run_dir, "config.yaml"))
    trainer = dict(resolved["trainer"])
    initialize = run.initialize
    if initialize is not None:
        initialize = _reporting_transfer(initialize, run_dir)
    try:
        summary = train(
            task=run.task, model=run.model, tx=run.tx, data=run.data,
            augment=run.augment, run_dir=run_dir, seed=cfg.seed, config=resolved,
            initialize=initialize, **trainer,
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


def _reporting_transfer(initialize, run_dir: str):
    """``initialize`` that also writes its load report to ``transfer.json``."""

    def load(state):
        state = initialize(state)
        with open(os.path.join(run_dir, "transfer.json"), "w") as f:
            json.dump(initialize.report, f, indent=2)
            f.write("\n")
        return state

    return load


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
    _compilation_cache(cfg)
    run_dir = cfg.run_dir
    train_cfg = _run_config("medjax-eval", run_dir)
    if cfg.get("data_dir"):
        train_cfg.data.data_dir = cfg.data_dir
    try:
        task, model, tx, data, *_ = build_run(train_cfg)
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
    _compilation_cache(cfg)
    run_dir = cfg.run_dir
    train_cfg = _run_config("medjax-predict", run_dir)
    try:
        task, model, tx, data, *_ = build_run(train_cfg)
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
