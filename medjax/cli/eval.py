"""``medjax-eval run_dir=DIR``: evaluate a checkpoint of a training run."""

import json
import os
import sys

import hydra
from omegaconf import DictConfig

from medjax import files
from medjax.cli.common import (
    CONFIG_PATH, quote_path_arguments, reports_errors, require_run_dir, start_from_run,
)
from medjax.config.run import build_run


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="eval")
@reports_errors("medjax-eval")
def _eval(cfg: DictConfig) -> None:
    from medjax.engine.evaluate import evaluate_checkpoint

    run_dir = cfg.run_dir
    train_cfg = start_from_run("medjax-eval", cfg)
    if cfg.get("data_dir"):
        train_cfg.data.data_dir = cfg.data_dir
    task, model, tx, data, *_ = build_run(train_cfg)
    result = evaluate_checkpoint(
        task=task, model=model, tx=tx, data=data, run_dir=run_dir,
        split=cfg.split, checkpoint=cfg.checkpoint, seed=train_cfg.seed,
        best_metric=train_cfg.trainer.best_metric, best_mode=train_cfg.trainer.best_mode,
    )
    path = os.path.join(run_dir, "eval.json")
    files.write_json(path, result)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


def main() -> None:
    require_run_dir("medjax-eval", sys.argv[1:])
    sys.argv[1:] = quote_path_arguments(sys.argv[1:])
    _eval()
