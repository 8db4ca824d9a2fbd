"""medjax's Hydra configs, installed as the package ``medjax.conf`` (see
pyproject.toml) and found by the programs as ``pkg://medjax.conf``. Hydra reads a
config package only when it has this file; the groups below it need none."""
