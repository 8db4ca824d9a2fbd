"""Building objects from Hydra config nodes: the one wrapper around
``hydra.utils.instantiate``. Library code never sees a config."""

from typing import Any

import hydra.errors
import hydra.utils
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from medjax.errors import ConfigError

ALLOWED_TARGET_PREFIXES = ("medjax.", "optax.")



def _medmnist(field: str, flag: str) -> Any:
    """``${medmnist:num_classes,${data.flag}}``: a fact of the MedMNIST table
    (num_classes, class_names, spatial_dims, num_channels, multi_label)."""
    from medjax.data.datasets import medmnist  # TFDS: only when a config asks

    facts = {
        "num_classes": medmnist.num_classes,
        "class_names": lambda f: list(medmnist.class_names(f)),
        "spatial_dims": medmnist.spatial_dims,
        "num_channels": medmnist.num_channels,
        "multi_label": medmnist.is_multi_label,
    }
    if field not in facts:
        raise ConfigError(f"${{medmnist:{field},...}}: expected one of {sorted(facts)}")
    try:
        return facts[field](flag)
    except ConfigError:
        raise
    except (KeyError, ValueError) as error:
        raise ConfigError(f"data.flag={flag!r}: {error}") from None


# ``${len:${task.views}}``: a multistream model has one stream per view.
if not OmegaConf.has_resolver("len"):
    OmegaConf.register_new_resolver("len", lambda items: len(items))
if not OmegaConf.has_resolver("medmnist"):
    OmegaConf.register_new_resolver("medmnist", _medmnist)


def _check_targets(node: Any, path: str) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_TARGET_PREFIXES):
            raise ConfigError(
                f"{path}._target_={target!r}: only targets under "
                f"{' or '.join(ALLOWED_TARGET_PREFIXES)} may be built"
            )
        for key, value in node.items():
            _check_targets(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_targets(value, f"{path}[{i}]")


def build(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """Instantiates ``node`` (plain Python containers passed to the target).

    Args:
        node: a config node with ``_target_``.
        path: its name in the composed config (``model``, ``optim``), for errors.
        **kwargs: extra arguments for the target.

    Raises:
        ConfigError: a disallowed target, or a ``ValueError``/``TypeError`` raised
            by the target (bad value, unknown or missing argument), re-raised with
            the option's name.
    """
    try:
        container = OmegaConf.to_container(node, resolve=True)
    except InterpolationResolutionError as error:
        # e.g. ${medmnist:num_classes,${data.flag}} with an unknown flag
        message = str(error).splitlines()[0]
        message = message.split("raised while resolving interpolation: ", 1)[-1]
        raise ConfigError(message) from None
    if not isinstance(container, dict) or "_target_" not in container:
        raise ConfigError(f"{path}: expected a config group with a _target_")
    _check_targets(container, path)
    try:
        return hydra.utils.instantiate(container, _convert_="all", **kwargs)
    except hydra.errors.InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            message = str(cause)
            if not message.startswith(path):
                message = f"{path} ({container['_target_']}): {message}"
            raise ConfigError(message) from cause
        raise
