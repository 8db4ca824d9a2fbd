"""Shared by the command-line programs: one-line failures, quiet libraries,
the compilation cache, a run directory's saved config, path arguments."""

import logging
import os
import sys

from omegaconf import DictConfig, OmegaConf

from medjax.config import CONFIG_PATH  # noqa: F401  (the programs' config_path)


def quiet_libraries() -> None:
    # Hydra sets the root logger to INFO; orbax and tfds log every save and read
    # through absl at INFO, which would bury the progress bar.
    logging.getLogger("absl").setLevel(logging.WARNING)


def fail(program: str, error: Exception) -> None:
    sys.exit(f"{program}: error: {error}")


def compilation_cache(cfg: DictConfig) -> None:
    """JAX's persistent compilation cache in ``cfg.compilation_cache`` (null: off)."""
    from medjax.runtime import enable_compilation_cache

    enable_compilation_cache(cfg.get("compilation_cache"))


def run_config(program: str, run_dir: str) -> DictConfig:
    """The resolved config a medjax-train run saved in ``run_dir``."""
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(config_path):
        fail(program, FileNotFoundError(
            f"run_dir={run_dir}: no config.yaml (not a medjax run directory)"
        ))
    return OmegaConf.load(config_path)


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


def start_from_run(program: str, cfg: DictConfig) -> DictConfig:
    """What ``medjax-eval`` and ``medjax-predict`` do first: quiet libraries, the
    compilation cache, and the config the training run ``cfg.run_dir`` saved."""
    quiet_libraries()
    compilation_cache(cfg)
    return run_config(program, cfg.run_dir)
