"""``medjax-train``: compose a run, build it, train it."""

import json
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from medjax.cli.common import CONFIG_PATH, compilation_cache, fail, quiet_libraries
from medjax.config.build import ConfigError
from medjax.config.run import build_run


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="train")
def _train(cfg: DictConfig) -> float | None:
    from medjax.engine.loop import train  # imports JAX: keep --help fast

    quiet_libraries()
    compilation_cache(cfg)
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        run = build_run(cfg)
    except ConfigError as error:
        fail("medjax-train", error)
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
        fail("medjax-train", error)
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


def main() -> None:
    _train()
