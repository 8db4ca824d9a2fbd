"""Building objects from Hydra config nodes: the one wrapper around
``hydra.utils.instantiate``. Library code never sees a config."""

import inspect
import types
import typing
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


#: What a value of each simple annotated type looks like, for errors.
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _simple_types(annotation: Any) -> tuple[type, ...] | None:
    """The plain types (bool, int, float, str, None) an annotation allows, or
    None when it allows anything else too (then nothing is checked)."""
    if annotation in _EXPECTED:
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if all(m in _EXPECTED or m is type(None) for m in members):
            return tuple(members)
    return None


def _accepts(types_: tuple[type, ...], value: Any) -> bool:
    if value is None:
        return type(None) in types_
    if isinstance(value, bool):  # a bool is an int to Python, not to a config
        return bool in types_
    if isinstance(value, int):
        return int in types_ or float in types_
    return any(t is not type(None) and isinstance(value, t) for t in types_)


def _check_argument_types(container: dict, path: str) -> None:
    """One line for an option whose value has the wrong type for the target's
    annotated parameter (``optim.lr=abc`` where ``lr: float``), before the
    target fails somewhere inside with Python's own words.

    Only parameters annotated with bool, int, float, str (or a union of them
    with None) are checked; others and unannotated ones are left to the target.
    """
    try:
        target = hydra.utils.get_object(container["_target_"])
    except (ImportError, AttributeError, hydra.errors.HydraException) as error:
        problem = " ".join(str(error).split("\n")[0].split())
        raise ConfigError(
            f"{path}._target_={container['_target_']!r}: not found ({problem})"
        ) from None
    try:
        parameters = inspect.signature(target, eval_str=True).parameters
    except (NameError, TypeError, ValueError):
        # annotations that do not evaluate here, or a builtin without a
        # signature: the target's own checks still apply
        return
    for key, value in container.items():
        parameter = parameters.get(key)
        if parameter is None or key.startswith("_"):
            continue
        allowed = _simple_types(parameter.annotation)
        if allowed is not None and not _accepts(allowed, value):
            expected = " or ".join(
                "null" if t is type(None) else _EXPECTED[t] for t in allowed
            )
            raise ConfigError(f"{path}.{key}: expected {expected}, got {value!r}")


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
    _check_argument_types(container, path)
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
