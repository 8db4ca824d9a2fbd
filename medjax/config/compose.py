"""Composing a config outside the command-line programs (experiments, tests)."""

from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

#: The package that holds the configs: ``conf/``, installed as ``medjax.conf``.
CONFIG_MODULE = "medjax.conf"


def compose(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Composes ``config_name`` from the ``medjax.conf`` package with command-line
    style ``overrides``, as ``medjax-train`` (or ``-eval``, ``-predict``, ``-show``)
    would before running.

    Args:
        config_name: The primary config: ``train``, ``eval``, ``predict`` or
            ``show``.
        overrides: Overrides as typed after the program's name, e.g.
            ``["experiment=lesion_25d", "trainer.max_steps=100"]``.

    Returns:
        The composed config, without the ``hydra`` node (run directory, logging)
        that only a program's own run uses.
    """
    with hydra.initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
        return hydra.compose(config_name=config_name, overrides=list(overrides))
