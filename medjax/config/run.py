"""``build_run``: the plain objects of one composed ``medjax-train`` config."""

import logging
import os
from typing import Any, Callable, NamedTuple

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medjax.config.build import ConfigError, build

logger = logging.getLogger("medjax")


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
    compiled, among them a task composed with data that lacks a field it needs.
    The task comes back configured for the data (``Task.configure``)."""
    from medjax.engine.loop import check_trainer_options

    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: expected an integer, got {seed!r}")
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_trainer_options(**trainer)
    task = build(cfg.task, "task")
    model = build(cfg.model, "model")
    data = build(cfg.data, "data")
    augment = build(cfg.augment, "augment") if cfg.get("augment") else None
    task_name, data_name = _names(cfg, data)
    task = task.configure(data, task_name=task_name, data_name=data_name)
    trainer = steps_from_epochs(trainer, data)
    optim = {"total_steps": trainer["max_steps"]}
    warmup = cfg.optim.get("warmup_steps")
    if warmup:
        optim["warmup_steps"] = _fitted_warmup(warmup, trainer["max_steps"])
    tx = build(cfg.optim, "optim", **optim)
    model, tx, initialize = _transfer(cfg.get("transfer"), model, tx)
    return Run(task, model, tx, data, augment, trainer, initialize)


def _names(cfg: DictConfig, data) -> tuple[str, str]:
    """What the task and data are called in messages: the Hydra group choices
    (``task=segmentation``, ``data=breast_cancer``) when Hydra composed the
    config, else the task's target and the data's own name."""
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        if choices.get("task") and choices.get("data"):
            return choices["task"], choices["data"]
    task_name = str(cfg.task.get("_target_", "")).rsplit(".", 1)[-1]
    return task_name, data.name or str(cfg.data.get("_target_", ""))


def _fitted_warmup(warmup_steps, max_steps: int):
    """``optim.warmup_steps``, or half the run when the warm-up would not end
    before it does (a short run, e.g. ``trainer.max_steps=6`` with the
    default 100 steps): the run then still sees both phases of its schedule.
    Said in one log line."""
    from medjax.engine.optim import fit_warmup  # optax imports JAX: keep --help fast

    fitted = fit_warmup(warmup_steps, max_steps)
    if fitted != warmup_steps:
        logger.warning(
            "optim.warmup_steps=%s does not fit trainer.max_steps=%d: warming up "
            "over %d steps instead", warmup_steps, max_steps, fitted,
        )
    return fitted


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
    if not os.path.exists(os.path.expanduser(str(checkpoint))):
        raise ConfigError(
            f"transfer.checkpoint={checkpoint}: no such directory (expected a "
            "medjax run directory or one of its checkpoints/<step> directories)"
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


