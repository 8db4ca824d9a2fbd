"""From a composed Hydra config to plain objects: the one instantiate wrapper
(``build``) and the run it builds (``build_run``). Only ``medjax.cli`` and this
package ever see a ``DictConfig``."""

import os

# conf/ at the top of the repository (see pyproject.toml).
CONFIG_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "conf"
)
#: What the programs pass to ``hydra.main(config_path=...)``.
CONFIG_PATH = CONFIG_DIR
