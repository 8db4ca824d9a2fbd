"""Normalisation and activation factories shared by every model.

``normalization(kind, train=...)`` returns a layer built in the caller's compact
scope, so its parameters keep the names Flax gives them there (``BatchNorm_0``,
``GroupNorm_1``, ...): checkpoints do not depend on which module chose the layer.
:class:`Norm` wraps the same choice as a submodule, for models (the U-Net) whose
parameter trees nest each normalisation one level deeper.

Group normalisation comes in the two forms the models use: a fixed number of
channels per group (``group_size``; the CNNs and autoencoders, 4 channels), or
at most ``num_groups`` groups, reduced to the largest divisor of the width (the
U-Net, so any width works).
"""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

NORMS = ("batch", "instance", "group", "none")
ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": nn.relu,
    "leaky_relu": nn.leaky_relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}


def _identity(x: jnp.ndarray) -> jnp.ndarray:
    return x


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest ``d <= limit`` dividing ``n`` (1 if ``limit < 1``)."""
    return (
        max(d for d in range(1, min(n, limit) + 1) if n % d == 0) if limit >= 1 else 1
    )


def check_norm(kind: str, option: str = "model.norm") -> None:
    """One-line error for an unknown normalisation name."""
    if kind not in NORMS:
        raise ValueError(f"{option}: expected one of {NORMS}, got {kind!r}")


def normalization(
    kind: str,
    *,
    train: bool,
    momentum: float = 0.99,
    group_size: int | None = 4,
    num_groups: int | None = None,
    name: str | None = None,
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """A normalisation layer ``[B, *spatial, C] -> same`` chosen by name.

    Call it inside a compact method: the layer is created in that module's scope.

    Args:
        kind: 'batch' (running statistics in evaluation), 'instance', 'group' or
            'none' (the identity, no parameters).
        train: BatchNorm normalises by the batch's statistics and updates the
            running ones only when True.
        momentum: BatchNorm running-average momentum (Flax's 0.99 averages over
            about 100 steps).
        group_size: 'group' only: channels per group (used when ``num_groups`` is
            None).
        num_groups: 'group' only: the number of groups (must divide the width;
            see :class:`Norm` for one that adapts).
        name: the layer's name (None: Flax's automatic ``BatchNorm_0``, ...).

    Raises:
        ValueError: an unknown ``kind``.
    """
    check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=momentum, name=name)
    if kind == "instance":
        return nn.InstanceNorm(name=name)
    if kind == "group":
        if num_groups is not None:
            return nn.GroupNorm(num_groups=num_groups, name=name)
        return nn.GroupNorm(num_groups=None, group_size=group_size, name=name)
    return _identity


class Norm(nn.Module):
    """:func:`normalization` as a submodule; 'group' uses the largest divisor of
    the width that is at most ``num_groups`` groups.

    Attributes:
        kind: 'batch', 'instance', 'group' or 'none'.
        num_groups: most groups for 'group'.
        momentum: BatchNorm running-average momentum.
    """

    kind: str
    num_groups: int = 8
    momentum: float = 0.99

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        groups = largest_divisor_at_most(x.shape[-1], self.num_groups)
        layer = normalization(
            self.kind, train=train, momentum=self.momentum, num_groups=groups
        )
        return layer(x)


def activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """The elementwise nonlinearity called ``name`` (see ``ACTIVATIONS``).

    Raises:
        ValueError: an unknown name.
    """
    if name not in ACTIVATIONS:
        raise ValueError(
            f"model.activation: expected one of {tuple(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]
