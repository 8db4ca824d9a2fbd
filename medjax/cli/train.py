"""``medjax-train``: compose a run, build it, train it."""

import logging
import os
import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medjax import files
from medjax.cli.common import (
    CONFIG_PATH,
    compilation_cache,
    quiet_libraries,
    reports_errors,
)
from medjax.cli.machine_share import share_machine
from medjax.config.resume import IGNORED_KEYS, check_resume
from medjax.config.run import build_run


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="train")
@reports_errors("medjax-train")
def _train(cfg: DictConfig) -> float | None:
    from medjax.engine import distributed, run_lock
    from medjax.engine.loop import train  # imports JAX: keep --help fast

    quiet_libraries()
    compilation_cache(cfg)
    hydra_config = HydraConfig.get()
    # Both before any device is used: a parallel sweep job's share of the
    # machine, then the other processes of a multi-process run.
    share = share_machine(hydra_config)
    if share is not None:
        logging.getLogger("medjax").info(
            "medjax: parallel sweep job in slot %d of %d: cores %s, GPUs %s",
            share["slot"], share["slots"], share["cpus"], share["gpus"] or "none")
    distributed.initialize(cfg.get("distributed") or {})
    run_dir = hydra_config.runtime.output_dir
    run = build_run(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["trainer"] = dict(run.trainer)
    if not resolved["trainer"].get("best_metric"):
        resolved["trainer"]["best_metric"] = run.task.primary_metric
        # The task's metric, ranked the task's way (landmarks' MRE: lower).
        resolved["trainer"]["best_mode"] = run.task.primary_mode
    trainer = dict(resolved["trainer"])
    initialize = run.initialize
    if initialize is not None:
        initialize = _reporting_transfer(initialize, run_dir)
    # What Hydra leaves out of the directory's name may change on resuming.
    excluded = hydra_config.job.config.override_dirname.exclude_keys
    ignored = set(IGNORED_KEYS) | set(excluded)
    try:
        # The lock first, then the comparison with what the directory holds,
        # and only then a write: a refused run changes nothing there.
        with run_lock.holding(run_dir):
            check_resume(run_dir, resolved, ignored)
            if distributed.is_main_process():
                config_path = os.path.join(run_dir, "config.yaml")
                files.write_text(config_path, OmegaConf.to_yaml(resolved))
            summary = train(
                task=run.task, model=run.model, tx=run.tx, data=run.data,
                augment=run.augment, run_dir=run_dir, seed=cfg.seed, config=resolved,
                initialize=initialize, **trainer,
            )
    except KeyboardInterrupt:
        sys.exit(130)
    if summary["interrupted"]:
        sys.exit(130)
    if distributed.is_main_process():
        print("\n".join(ending_lines(run_dir, summary)))
    best = summary.get("best") or {}
    best_metric = trainer["best_metric"]
    return best.get(best_metric) if best_metric else None


def ending_lines(run_dir: str, summary: dict, cwd: str | None = None) -> list[str]:
    """How a finished run ended: its directory, its best checkpoint (step and
    metric; the latest when no metric ranks them) and the command that
    evaluates that checkpoint. Paths are relative to ``cwd`` (default: the
    current directory) when the run lies below it."""
    path = os.path.relpath(run_dir, cwd or os.getcwd())
    if path.startswith(os.pardir):
        path = os.path.abspath(run_dir)
    lines = [f"medjax: run directory {path}"]
    best, metric = summary.get("best"), summary.get("best_metric")
    command = ["medjax-eval", f"run_dir={path}"]
    if best is not None and summary.get("best_checkpoint_step") is not None:
        lines.append(
            f"medjax: best checkpoint step {summary['best_checkpoint_step']} "
            f"({metric}={best[metric]:.4f} on validation)"
        )
    else:
        lines.append(
            f"medjax: no validation {metric or 'metric'} ranks the checkpoints; "
            f"latest checkpoint step {summary['steps']}"
        )
        command.append("checkpoint=latest")
    lines.append("medjax: evaluate it with: " + shlex.join(command))
    return lines


def _reporting_transfer(initialize, run_dir: str):
    """``initialize`` that also writes its load report to ``transfer.json``."""

    def load(state):
        state = initialize(state)
        files.write_json(os.path.join(run_dir, "transfer.json"), initialize.report)
        return state

    return load


def main() -> None:
    _train()
