"""Optimizers and learning-rate schedules from optax, by name."""

import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


def fit_warmup(warmup_steps: int, total_steps: int) -> int:
    """``warmup_steps`` when the warm-up ends before ``total_steps``, else half
    of ``total_steps`` (a run too short for its warm-up still decays after
    it). Values that are not non-negative integers pass through, for
    ``learning_rate_schedule`` to refuse."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int):
        return warmup_steps
    if 0 <= warmup_steps and warmup_steps >= max(total_steps, 1):
        return total_steps // 2
    return warmup_steps


def learning_rate_schedule(
    lr: float,
    total_steps: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    decay_boundaries: tuple[float, ...] = (0.5, 0.75),
    decay_factor: float = 0.1,
    final_lr_fraction: float = 0.0,
) -> optax.Schedule:
    """A linear warm-up from 0 over ``warmup_steps``, then:

    - ``constant``: ``lr``;
    - ``cosine``: cosine decay to ``final_lr_fraction * lr`` at ``total_steps``;
    - ``step``: ``lr`` times ``decay_factor`` at each fraction of ``total_steps`` in
      ``decay_boundaries``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if not 0 <= warmup_steps < max(total_steps, 1):
        raise ValueError(
            f"optim.warmup_steps={warmup_steps}: expected 0 <= warmup_steps < "
            f"trainer.max_steps={total_steps}"
        )
    decay_steps = total_steps - warmup_steps
    if schedule == "constant":
        after = optax.constant_schedule(lr)
    elif schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=final_lr_fraction)
    else:
        after = optax.piecewise_constant_schedule(
            lr, {int(f * total_steps) - warmup_steps: decay_factor for f in decay_boundaries}
        )
    if not warmup_steps:
        return after
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def make_optimizer(
    name: str,
    lr: float,
    total_steps: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    b1: float = 0.9,
    b2: float = 0.999,
    grad_clip_norm: float | None = None,
    decay_boundaries: tuple[float, ...] = (0.5, 0.75),
    decay_factor: float = 0.1,
    final_lr_fraction: float = 0.0,
) -> optax.GradientTransformation:
    """``adam``, ``adamw`` (decoupled ``weight_decay``) or ``sgd`` (with ``momentum``,
    optionally Nesterov, and L2 ``weight_decay``), driven by
    ``learning_rate_schedule``, after optional global-norm gradient clipping."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name: expected one of {OPTIMIZERS}, got {name!r}")
    if lr <= 0:
        raise ValueError(f"optim.lr: expected > 0, got {lr}")
    schedule_fn = learning_rate_schedule(
        lr, total_steps, schedule, warmup_steps, tuple(decay_boundaries), decay_factor,
        final_lr_fraction,
    )
    if name == "adam":
        tx = optax.adam(schedule_fn, b1=b1, b2=b2)
    elif name == "adamw":
        tx = optax.adamw(schedule_fn, b1=b1, b2=b2, weight_decay=weight_decay)
    else:
        tx = optax.sgd(schedule_fn, momentum=momentum or None, nesterov=nesterov)
        if weight_decay:
            tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    if grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx
