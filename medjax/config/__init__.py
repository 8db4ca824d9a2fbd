"""From a composed Hydra config to plain objects: the one instantiate wrapper
(``build``) and the run it builds (``build_run``). Only ``medjax.cli`` and this
package ever see a ``DictConfig``.

The configs are the package ``medjax.conf``: ``conf/`` at the top of the
repository, installed under that name (see pyproject.toml), so a wheel, an
editable install and a checkout on ``PYTHONPATH`` all find them the same way.
"""

import importlib.resources
import importlib.util
import sys
from pathlib import Path

from medjax.config.compose import CONFIG_MODULE, compose

#: What the programs pass to ``hydra.main(config_path=...)``.
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def _use_checkout_configs() -> None:
    """Makes ``medjax.conf`` this checkout's ``conf/`` when medjax runs from a
    checkout (``<repo>/medjax`` beside ``<repo>/conf`` and ``<repo>/pyproject.toml``).

    An editable install maps it there already; this covers a checkout on
    ``PYTHONPATH``, which without it would compose the configs of whichever
    medjax is installed (or none). An installed wheel has no such neighbours and
    keeps the ``medjax.conf`` it was installed with.
    """
    repo = Path(__file__).resolve().parents[2]
    init = repo / "conf" / "__init__.py"
    if CONFIG_MODULE in sys.modules or not (
        init.is_file() and (repo / "pyproject.toml").is_file()
    ):
        return
    spec = importlib.util.spec_from_file_location(
        CONFIG_MODULE, init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[CONFIG_MODULE] = module
    spec.loader.exec_module(module)
    sys.modules["medjax"].conf = module


_use_checkout_configs()

#: The configs' directory on the file system (``medjax/conf`` of the installed
#: package), for tests that read or glob the YAML files themselves.
CONFIG_DIR = str(importlib.resources.files(CONFIG_MODULE))

__all__ = ["CONFIG_DIR", "CONFIG_MODULE", "CONFIG_PATH", "compose"]
