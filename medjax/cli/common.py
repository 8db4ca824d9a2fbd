"""Shared by the command-line programs: one-line failures, quiet libraries,
the compilation cache, a run directory's saved config, path arguments."""

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from medjax.config import CONFIG_PATH  # noqa: F401  (the programs' config_path)
from medjax.errors import ConfigError, MedjaxError, RunDirectoryError, WriteError

#: The groups every config.yaml that medjax-train writes holds.
RUN_CONFIG_KEYS = ("task", "model", "data", "optim", "trainer")


def quiet_libraries() -> None:
    # Hydra sets the root logger to INFO; orbax and tfds log every save and read
    # through absl at INFO, which would bury the progress bar.
    logging.getLogger("absl").setLevel(logging.WARNING)


def fail(program: str, error: Exception) -> None:
    """Ends the program with ``"<program>: error: <message>"`` on one line of
    stderr and exit status 1."""
    message = " ".join(str(error).split()) or type(error).__name__
    sys.exit(f"{program}: error: {message}")


def unset_options(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys left ``???`` in ``node``; interpolations are not
    resolved (that is the task function's business, with its own errors)."""
    unset = []
    for key in node.keys():
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            unset.append(path)
        elif not OmegaConf.is_interpolation(node, key):
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                unset += unset_options(child, f"{path}.")
    return unset


def reports_errors(program: str) -> Callable[[Callable], Callable]:
    """Decorates a program's Hydra task function (below ``@hydra.main``): a
    ``MedjaxError`` (a user's mistake or an unusable input) and a ``???`` value
    left unset end the program with one line (see ``fail``); anything else is a
    bug and keeps its traceback."""

    def decorate(function: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
        @functools.wraps(function)
        def run(cfg: DictConfig) -> Any:
            missing = unset_options(cfg)
            if missing:  # mandatory options (``input: ???``) not given
                fail(program, ConfigError(
                    f"missing {', '.join(missing)}; give "
                    + " ".join(f"{key}=VALUE" for key in missing)
                ))
            try:
                return function(cfg)
            except MedjaxError as error:
                fail(program, error)
            except MissingMandatoryValue as error:
                # one reached through an interpolation
                key = error.full_key or "a mandatory option"
                fail(program, ConfigError(f"{key}: missing; give {key}=VALUE"))

        return run

    return decorate


class CheckRunDirectory(Callback):
    """A Hydra callback (``hydra.callbacks`` in train.yaml): the run directory
    must be one this process can create and write, checked before Hydra makes it
    (where a failure would end in Hydra's traceback)."""

    def __init__(self, program: str):
        self.program = program

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.sweep.dir), "hydra.sweep.dir")

    def _check(self, directory: str, option: str) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            fail(self.program, WriteError(
                f"{option}={directory}: cannot create the run directory ({reason})"
            ))
        if not os.access(directory, os.W_OK):
            fail(self.program, WriteError(
                f"{option}={directory}: the run directory is not writable"
            ))


def require_run_dir(program: str, argv: list[str]) -> None:
    """Before Hydra starts (its ``hydra.run.dir`` is the run directory, which it
    would create): ``run_dir=DIR`` must be given and be a directory.

    Args:
        program: the program's name, for the error line.
        argv: the command-line arguments after the program's name.
    """
    if any(arg.startswith("-") for arg in argv):  # --help, --cfg, -m: Hydra's
        return
    values = [arg.split("=", 1)[1] for arg in argv if arg.lstrip("+~").startswith("run_dir=")]
    if not values:
        fail(program, ConfigError(
            "run_dir: missing; give run_dir=DIR, the directory of a medjax-train run"
        ))
    run_dir = values[-1].strip("'\"")
    if not os.path.isdir(run_dir):
        problem = "not a directory" if os.path.exists(run_dir) else "no such directory"
        fail(program, RunDirectoryError(f"run_dir={run_dir}: {problem}"))


def compilation_cache(cfg: DictConfig) -> None:
    """JAX's persistent compilation cache in ``cfg.compilation_cache`` (null: off)."""
    from medjax.runtime import enable_compilation_cache

    enable_compilation_cache(cfg.get("compilation_cache"))


def run_config(program: str, run_dir: str) -> DictConfig:
    """The resolved config a medjax-train run saved in ``run_dir``.

    Raises:
        RunDirectoryError: no config.yaml, or one that is not readable YAML or
            not a medjax-train config (e.g. truncated, or another tool's).
    """
    config_path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(config_path):
        raise RunDirectoryError(
            f"run_dir={run_dir}: no config.yaml (not a medjax run directory)"
        )
    try:
        config = OmegaConf.load(config_path)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = " ".join(str(error).split())
        raise RunDirectoryError(
            f"{config_path}: not readable YAML ({problem}); damaged?"
        ) from None
    missing = [
        key for key in RUN_CONFIG_KEYS
        if not isinstance(config, DictConfig) or not isinstance(config.get(key), DictConfig)
    ]
    if missing:
        raise RunDirectoryError(
            f"{config_path}: not the config of a medjax-train run (no "
            f"{', '.join(missing)}); damaged, or another tool's?"
        )
    return config


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
