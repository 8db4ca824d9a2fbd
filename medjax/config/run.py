"""``build_run``: the plain objects of one composed ``medjax-train`` config."""

import dataclasses
from typing import Any, Callable, NamedTuple

from omegaconf import DictConfig, OmegaConf

from medjax.config.build import ConfigError, build


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
    from medjax.engine.loop import check_trainer_options

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
        from medjax.tasks.classification.task import balanced_class_weights

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
    from medjax.engine import transfer

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
    # The model declares its backbone and stages (medjax.models.groups): frozen
    # stages also keep their normalisation statistics.
    model = transfer.prepare_model(model, mode, trainable)
    tx = transfer.transfer_optimizer(
        tx, transfer.groups_of(model), mode, trainable, factor
    )
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


