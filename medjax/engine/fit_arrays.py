"""One small jitted training loop for arrays already in memory.

``medjax.engine.loop`` trains a model on a dataset: grain pipelines, sharding,
checkpoints, evaluation. Some training needs none of that: fitting a linear
regression by gradient descent, stacking RBMs (each learns the codes of the one
below, computed once and held in memory), pretraining an autoencoder layer by
layer, fine-tuning a small classifier on a hundred labelled rows. They all use
:func:`fit_arrays`: an optax optimiser on a loss of the parameters and a
minibatch, one jitted step, a key per step.

Minibatches (``order``):

- ``"full"``: every step sees all rows (full-batch gradient descent);
- ``"random"``: step ``i`` draws ``batch_size`` distinct rows with
  ``jax.random.choice(fold_in(key, i), N, replace=False)``;
- ``"epochs"``: rows in a fresh permutation every epoch,
  ``numpy.random.default_rng([epoch_seed, epoch]).permutation(N)``, ``N //
  batch_size`` steps an epoch (the last partial batch is dropped).

The loss gets the step's key ``fold_in(key, i)`` (with ``"random"``, whose rows
take that key, ``fold_in(fold_in(key, i), 1)``).
"""

import dataclasses
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from medjax.metrics.regression import mean_squared_error

ORDERS = ("full", "random", "epochs")


@dataclasses.dataclass
class Fit:
    """What :func:`fit_arrays` returns.

    Attributes:
        params: the trained parameters.
        state: the final non-trained state (None without one).
        losses: ``[steps]`` the loss of each step's minibatch, before its update
            (a jax array).
        metrics: ``{name: [steps]}`` the loss function's auxiliary metrics.
    """

    params: Any
    state: Any
    losses: np.ndarray
    metrics: dict[str, np.ndarray]


def fit_arrays(
    loss_fn: Callable,
    params: Any,
    data: Any,
    *,
    tx: optax.GradientTransformation,
    steps: int,
    batch_size: int | None = None,
    order: str = "random",
    key: jax.Array | None = None,
    has_aux: bool = False,
    state: Any = None,
    epoch_seed: int = 0,
    steps_per_call: int = 1,
    progress: str | None = None,
    callback: Callable[[int, Any], None] | None = None,
) -> Fit:
    """Trains ``params`` by ``tx`` on minibatches of ``data``, ``steps`` updates.

    Args:
        loss_fn: ``(params, batch, key) -> loss``, a scalar; with ``has_aux``,
            ``-> (loss, metrics)``, ``metrics`` a dict of scalars. With ``state``
            it is ``(params, batch, key, state) -> (loss, (metrics, new_state))``.
            ``batch`` is ``data`` with ``batch_size`` rows.
        params: the pytree ``tx`` updates.
        data: a pytree of arrays with the same leading size ``N`` (an array, or
            e.g. ``(x, y)``).
        tx: the optimiser.
        steps: number of updates (>= 1).
        batch_size: rows a step (``"random"``: at most ``N``); ignored by ``"full"``.
        order: ``"full"``, ``"random"`` or ``"epochs"`` (module docstring).
        key: PRNG key; needed by ``"random"``. Its ``fold_in(key, i)`` is step
            ``i``'s.
        has_aux: ``loss_fn`` also returns metrics.
        state: variables the loss updates but ``tx`` does not train (an RBM's
            persistent chain); None: none.
        epoch_seed: seeds the ``"epochs"`` permutations.
        steps_per_call: steps run in one jitted call (a ``lax.scan``): many
            for short steps (full-batch regression), where dispatching each step
            from Python would dominate; ``callback`` and the progress bar see
            the end of each call only.
        progress: a tqdm description to show a progress bar (None: none).
        callback: ``(steps_done, params) -> None``, called on the host after each
            step (e.g. a test curve every few steps).

    Returns:
        A :class:`Fit`: the parameters, state, per-step losses and metrics.
    """
    if order not in ORDERS:
        raise ValueError(f"fit_arrays: order must be one of {ORDERS}, got {order!r}")
    if steps < 1:
        raise ValueError(f"fit_arrays: expected steps >= 1, got {steps}")
    num_rows = len(jax.tree.leaves(data)[0])
    if order != "full" and (batch_size is None or batch_size < 1):
        raise ValueError(f"fit_arrays: order={order!r} needs batch_size >= 1")
    if order == "epochs" and num_rows < batch_size:
        raise ValueError(f"fit_arrays: {num_rows} rows is fewer than batch_size={batch_size}")
    if order == "random" and key is None:
        raise ValueError("fit_arrays: order='random' needs a key")
    with_state = state is not None
    aux = has_aux or with_state
    steps_per_call = max(1, min(steps_per_call, steps))
    data = jax.tree.map(jnp.asarray, data)
    rows_per_step = num_rows if order == "full" else min(batch_size, num_rows)

    def take(data, rows):
        return jax.tree.map(lambda array: array[rows], data)

    def one_step(carry, inputs, data):
        params, state, opt_state = carry
        index, rows = inputs
        step_key = loss_key = None if key is None else jax.random.fold_in(key, index)
        if order == "random":
            rows = jax.random.choice(step_key, num_rows, (rows_per_step,), replace=False)
            loss_key = jax.random.fold_in(step_key, 1)
        batch = data if order == "full" else take(data, rows)
        args = (params, batch, loss_key) + ((state,) if with_state else ())
        result, grads = jax.value_and_grad(loss_fn, has_aux=aux)(*args)
        loss, metrics = result if aux else (result, {})
        if with_state:
            metrics, state = metrics
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state), (loss, metrics)

    @jax.jit
    def run(carry, indices, rows, data):
        """``len(indices)`` steps in one call."""
        return jax.lax.scan(partial(one_step, data=data), carry, (indices, rows))

    steps_per_epoch = num_rows // batch_size if order == "epochs" else 0
    carry, history = (params, state, tx.init(params)), []
    bar = tqdm(total=steps, desc=progress, disable=progress is None, leave=False)
    for start in range(0, steps, steps_per_call):
        indices = np.arange(start, min(start + steps_per_call, steps))
        rows = np.zeros((len(indices), 0), np.int32)  # drawn in the step, or all rows
        if order == "epochs":
            rows = np.stack([_epoch_rows(i, steps_per_epoch, batch_size, num_rows, epoch_seed)
                             for i in indices])
        carry, outputs = run(carry, indices, rows, data)
        history.append(outputs)
        bar.update(len(indices))
        if callback is not None:
            callback(int(indices[-1]) + 1, carry[0])
    bar.close()
    # Left on the device (no host transfer), so that fit_arrays can run inside jit.
    losses, metrics = jax.tree.map(lambda *chunks: jnp.concatenate(chunks), *history)
    return Fit(params=carry[0], state=carry[1], losses=losses, metrics=metrics)


def _epoch_rows(step: int, steps_per_epoch: int, batch_size: int, num_rows: int, seed: int):
    """The rows of ``step`` in the ``"epochs"`` order."""
    epoch, index = divmod(step, steps_per_epoch)
    permutation = np.random.default_rng([seed, epoch]).permutation(num_rows)
    return permutation[index * batch_size : (index + 1) * batch_size]


def fit_by_gradient_descent(
    X: jnp.ndarray,
    y: jnp.ndarray,
    *,
    lr: float,
    steps: int,
    optimizer: Callable[[float], optax.GradientTransformation] = optax.sgd,
    fit_intercept: bool = True,
    init: tuple[jnp.ndarray, jnp.ndarray] | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, np.ndarray]:
    """Linear regression ``y ~ X w + b`` by full-batch gradient descent on the
    mean squared error: ``steps`` optax updates by :func:`fit_arrays`.

    Plain SGD (``optax.sgd``, the default) is the seed's ``x_{n+1} = x_n - lr
    grad``; it converges to ``medjax.models.linear.normal_equation``'s solution
    when ``lr`` is below ``1 / lambda_max`` of ``X^T X / N`` (with the intercept,
    of the centred features' matrix and 1), at a rate set by the condition number,
    so standardise the features first. ``optax.adam`` and the like work too.

    Args:
        X: features ``[N, D]``.
        y: targets ``[N]``.
        lr: learning rate.
        steps: number of updates.
        optimizer: ``lr -> optax.GradientTransformation`` (``optax.sgd``,
            ``optax.adam``, or a ``functools.partial`` of one); hashable.
        fit_intercept: False keeps ``b = 0``.
        init: starting ``(w [D], b)``; zeros by default.

    Returns:
        ``(w [D], b, losses [steps])``: the final parameters, and the MSE of the
        parameters before each update (``losses[0]`` is the MSE at ``init``).
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    if X.ndim != 2 or y.shape != X.shape[:1]:
        raise ValueError(
            "fit_by_gradient_descent: expected X [N, D] and y [N], got "
            f"{X.shape} and {y.shape}"
        )
    if steps < 1:
        raise ValueError(f"fit_by_gradient_descent: expected steps >= 1, got {steps}")
    dtype = jnp.result_type(X.dtype, y.dtype, jnp.float32)
    X, y = X.astype(dtype), y.astype(dtype)
    if init is None:
        w0, b0 = jnp.zeros(X.shape[1], dtype), jnp.zeros((), dtype)
    else:
        w0, b0 = jnp.asarray(init[0], dtype), jnp.asarray(init[1], dtype)
    return _descend(
        X, y, w0, b0, lr, steps=steps, optimizer=optimizer, fit_intercept=fit_intercept
    )


# Jitted at module level, so that a second fit of the same shapes and options
# compiles nothing (fit_arrays' own step is jitted anew at every call).
@partial(jax.jit, static_argnames=("steps", "optimizer", "fit_intercept"))
def _descend(X, y, w0, b0, lr, *, steps, optimizer, fit_intercept):
    def loss_fn(params, batch, key):
        X, y = batch
        b = params["b"] if fit_intercept else 0.0
        return mean_squared_error(y, X @ params["w"] + b)

    fit = fit_arrays(
        loss_fn, {"w": w0, "b": b0}, (X, y), tx=optimizer(lr), steps=steps, order="full",
        steps_per_call=steps,  # one scan: the steps are tiny
    )
    return fit.params["w"], fit.params["b"], fit.losses
