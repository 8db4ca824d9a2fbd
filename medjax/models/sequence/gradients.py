"""How far back a sequence model's loss reaches: the norm of the loss gradient
with respect to each input frame.

A recurrent network whose gradient vanishes gives frames far from the end of
the sequence gradients many orders of magnitude below the last frame's, and
so cannot learn from them; :func:`input_gradient_norms` measures that
(``experiments/sequences/vanishing_gradient``).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def input_gradient_norms(
    apply_fn: Callable[[Any, jnp.ndarray], jnp.ndarray],
    variables: Any,
    x: jnp.ndarray,
    y: jnp.ndarray,
    loss_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] = (
        optax.softmax_cross_entropy_with_integer_labels
    ),
) -> jnp.ndarray:
    """Mean over the batch of ``||dL_b / dx_{b,t}||`` for every step ``t``.

    ``L_b`` is example ``b``'s own loss. One ``jax.grad`` of the batch's summed
    loss gives them all at once: with ``apply_fn`` in inference mode (no batch
    statistics, no dropout) example ``b``'s output depends on ``x[b]`` only, so
    the gradient of the sum at ``x[b]`` is that of ``L_b`` alone. (A batch mean
    would scale every norm by ``1 / B``.)

    Args:
        apply_fn: ``(variables, x) -> outputs [B, ...]``, e.g.
            ``lambda v, x: model.apply(v, x, train=False)``.
        variables: the model's variables.
        x: inputs ``[B, T, ...]``, time on axis 1.
        y: targets ``[B, ...]``, as ``loss_fn`` takes them.
        loss_fn: ``(outputs, y) -> [B]`` per-example losses; default softmax
            cross-entropy of logits ``[B, C]`` with integer labels ``[B]``.

    Returns:
        ``[T]``: the L2 norm over each frame's features of the gradient of its
        example's loss, averaged over the batch.
    """
    if x.ndim < 2:
        raise ValueError(
            f"input_gradient_norms: expected x [batch, time, ...], got {x.shape}"
        )

    def summed_loss(inputs):
        return jnp.sum(loss_fn(apply_fn(variables, inputs), y))

    grads = jax.grad(summed_loss)(x)
    per_frame = grads.reshape(grads.shape[:2] + (-1,))
    return jnp.mean(jnp.linalg.norm(per_frame, axis=-1), axis=0)
