"""Similarity-driven iterative registration in JAX: optimise a transform so that
the warped moving image best matches the fixed one, jitted and vmapped over a
batch of pairs.

The method elastix and ANTs users know: a transform (``transforms``:
translation, rigid, affine, B-spline free-form deformation, dense field), a
similarity (``medjax.losses.registration``: SSD, NCC, local NCC, Mattes MI, or a
learned one passed as a function), a regulariser for deformable transforms
(diffusion or bending energy), an optax optimiser (adam or L-BFGS) run for a
fixed number of iterations, and a multi-resolution pyramid.

The pyramid: at shrink factor ``f`` both images are smoothed by a Gaussian of
``f / 2`` voxels (elastix's default schedule) and the fixed image is sampled on
every ``f``-th voxel; the moving image is read at the transformed
full-resolution coordinates of those points. The parameters are the same at
every level (linear and B-spline transforms are resolution-free; a dense field
is interpolated to the next level's grid), so coarse levels only make the start
cheaper and the landscape smoother.

Only voxels that map inside the moving image count towards the similarity (a
region of interest recomputed at every iteration), so a transform cannot gain
by pushing the image out of view.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.losses import registration as similarity_lib
from medjax.ops import filters, spatial
from medjax.tasks.registration import transforms

#: A similarity as a loss: ``(fixed [1, *T, C], warped [1, *T, C], roi [1, *T]) -> [1]``.
SimilarityLoss = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _edge_weights_1d(size: int, sigma: float) -> np.ndarray:
    """The share of a zero-padded 1-D Gaussian's taps that fall inside an axis
    of ``size`` voxels, at each voxel (``gaussian_smooth``'s kernel)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    return np.convolve(np.ones(size), taps, mode="same").astype(np.float32)


def _smooth(image: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """``image [*S, C]`` blurred by a Gaussian, normalised at the edges (the
    zero padding would darken them). The kernel is separable, so the
    normalisation is a product of per-axis profiles (small constants: a
    blurred image of ones would be constant-folded by XLA at compile time)."""
    if sigma <= 0:
        return image
    channels = jnp.moveaxis(image, -1, 0)
    blurred = filters.gaussian_smooth(channels, sigma)
    shape = channels.shape[1:]
    weight = 1.0
    for axis, size in enumerate(shape):
        profile = _edge_weights_1d(size, sigma).reshape(
            (1,) + tuple(size if a == axis else 1 for a in range(len(shape))))
        weight = weight * jnp.asarray(profile)
    return jnp.moveaxis(blurred / weight, 0, -1)


def _positions(shape: tuple[int, ...], factor: int) -> tuple[np.ndarray, ...]:
    return tuple(np.arange(0, n, factor, dtype=np.float32) for n in shape)


def _grid(positions: tuple[np.ndarray, ...]) -> jnp.ndarray:
    return jnp.stack(jnp.meshgrid(*[jnp.asarray(p) for p in positions], indexing="ij"), -1)


@dataclasses.dataclass(frozen=True)
class IterativeRegistration:
    """Iterative registration of ``moving`` onto ``fixed``.

    Attributes:
        transform: ``translation``, ``rigid``, ``affine``, ``bspline`` or
            ``dense``.
        similarity: a name of ``medjax.losses.registration.SIMILARITIES``
            (``ssd``, ``ncc``, ``lncc``, ``mi``).
        similarity_options: ``((name, value), ...)`` for it (``window``,
            ``num_bins``).
        levels: shrink factors of the pyramid, coarse to fine, e.g. ``(4, 2, 1)``.
        iterations: optimiser steps per level (one number or one per level).
        optimizer: ``adam`` or ``lbfgs`` (optax, with its zoom line search).
        learning_rate: adam's step, in the scaled parameter units (about one
            voxel at the image's edge per unit).
        regularizer: ``diffusion`` or ``bending``, for deformable transforms.
        regularization: its weight (0: none).
        grid_spacing: B-spline control-point spacing in voxels.
    """

    transform: str = "affine"
    similarity: str = "ncc"
    similarity_options: tuple = ()
    levels: tuple[int, ...] = (4, 2, 1)
    iterations: int | tuple[int, ...] = 100
    optimizer: str = "adam"
    learning_rate: float = 0.1
    regularizer: str = "diffusion"
    regularization: float = 0.0
    grid_spacing: int = 8
    outside: str = "background"

    def __post_init__(self):
        transforms.check_kind(self.transform)
        object.__setattr__(self, "levels", tuple(int(f) for f in self.levels))
        object.__setattr__(self, "similarity_options", tuple(
            (k, v) for k, v in dict(self.similarity_options).items()))
        if isinstance(self.iterations, int):
            object.__setattr__(self, "iterations", (self.iterations,) * len(self.levels))
        else:
            object.__setattr__(self, "iterations", tuple(int(i) for i in self.iterations))
        if len(self.iterations) != len(self.levels):
            raise ValueError(
                f"iterations: expected one value or {len(self.levels)} (one per level), "
                f"got {self.iterations}"
            )
        if not self.levels or any(f < 1 for f in self.levels):
            raise ValueError(f"levels: expected shrink factors >= 1, got {self.levels}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer: expected adam or lbfgs, got {self.optimizer!r}")
        if self.outside not in ("background", "exclude"):
            raise ValueError(f"outside: expected background or exclude, got {self.outside!r}")
        if self.regularizer not in ("diffusion", "bending"):
            raise ValueError(
                f"regularizer: expected diffusion or bending, got {self.regularizer!r}"
            )
        if self.similarity not in similarity_lib.SIMILARITIES:
            raise ValueError(
                f"similarity: expected one of {sorted(similarity_lib.SIMILARITIES)}, "
                f"got {self.similarity!r}"
            )

    # -- the pieces ------------------------------------------------------------------

    def _similarity_loss(self, fixed, warped, roi) -> jnp.ndarray:
        return similarity_lib.similarity_loss(
            self.similarity, fixed[None], warped[None], roi=roi[None],
            **dict(self.similarity_options),
        )[0]

    def _penalty(self, displacement: jnp.ndarray, factor: int) -> jnp.ndarray:
        if self.regularization == 0 or self.transform in transforms.LINEAR:
            return jnp.zeros((), jnp.float32)
        penalty = (similarity_lib.diffusion_penalty if self.regularizer == "diffusion"
                   else similarity_lib.bending_energy)
        order = 1 if self.regularizer == "diffusion" else 2
        # Differences between level grid points f voxels apart: per-voxel units.
        return penalty(displacement[None])[0] / float(factor) ** (2 * order)

    def mapping(self, params, initial_matrix, shape, positions, spacing=None) -> jnp.ndarray:
        """``T(x)`` ``[*T, ndim]`` at the grid of ``positions`` (moving voxels)."""
        grid = _grid(positions)
        if self.transform in transforms.LINEAR:
            matrix = initial_matrix @ transforms.linear_matrix(self.transform, params, shape,
                                                               spacing)
            return spatial.apply_homogeneous(matrix, grid)
        u = transforms.deformation(self.transform, params, positions, self.grid_spacing)
        return spatial.apply_homogeneous(initial_matrix, grid + u)

    def _level_loss(self, params, fixed_level, moving_smooth, initial_matrix, shape,
                    positions, factor, similarity_loss, spacing):
        coords = self.mapping(params, initial_matrix, shape, positions, spacing)
        upper = jnp.asarray(moving_smooth.shape[:-1], jnp.float32) - 1
        if self.outside == "exclude":
            roi = jnp.all((coords >= 0) & (coords <= upper), axis=-1)
            cval = 0.0
        else:
            roi = jnp.ones(coords.shape[:-1], bool)
            cval = jnp.min(moving_smooth)
        warped = spatial.sample(moving_smooth, coords, cval=cval)
        loss = similarity_loss(fixed_level, warped, roi)
        if self.transform in transforms.DEFORMABLE:
            loss = loss + self.regularization * self._penalty(coords - _grid(positions), factor)
        return loss

    def _optimizer(self) -> optax.GradientTransformation:
        if self.optimizer == "adam":
            return optax.adam(self.learning_rate)
        return optax.lbfgs()

    # -- one pair --------------------------------------------------------------------

    def register_pair(
        self,
        fixed: jnp.ndarray,
        moving: jnp.ndarray,
        initial_matrix: jnp.ndarray | None = None,
        similarity_loss: SimilarityLoss | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> dict[str, jnp.ndarray]:
        """Register one pair (traceable: jit and vmap it, or use ``__call__``).

        Args:
            fixed: ``[*S, C]``; the result lives on its grid.
            moving: ``[*M, C]``, the same number of spatial axes and channels;
                ``M`` may differ from ``S`` when ``initial_matrix`` maps one grid
                onto the other.
            initial_matrix: ``[ndim+1, ndim+1]`` fixed voxel -> moving voxel map
                applied last, ``T = A0 ∘ T_params``: the images' geometry
                (``inv(moving affine) @ fixed affine``) or an affine result before
                a deformable stage; default the identity.
            spacing: the fixed image's voxel size; linear transforms are then
                parametrised in mm (rigid in the patient); default voxels.
            similarity_loss: overrides ``similarity`` (a learned similarity):
                ``(fixed [*T, C], warped [*T, C], roi [*T]) -> scalar`` to minimise.

        Returns:
            ``displacement [*S, ndim]`` (pull-back: ``warped(x) =
            moving(x + displacement(x))``), ``matrix`` (the linear transform,
            or ``initial_matrix`` for a deformable one), ``warped [*S, C]``,
            ``loss [sum(iterations)]`` the objective at every iteration, and
            ``params`` the final parameters.
        """
        shape = tuple(fixed.shape[:-1])
        ndim = len(shape)
        if moving.ndim != fixed.ndim or moving.shape[-1] != fixed.shape[-1]:
            raise ValueError(
                f"register: fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} "
                "must have the same number of spatial axes and channels"
            )
        spacing = None if spacing is None else tuple(float(s) for s in spacing)
        initial_matrix = (jnp.eye(ndim + 1, dtype=jnp.float32) if initial_matrix is None
                          else jnp.asarray(initial_matrix, jnp.float32))
        similarity_loss = similarity_loss or self._similarity_loss
        fixed = fixed.astype(jnp.float32)
        moving = moving.astype(jnp.float32)
        tx = self._optimizer()
        histories = []
        params = None
        previous_positions = None
        for factor, steps in zip(self.levels, self.iterations):
            positions = _positions(shape, factor)
            level_shape = tuple(len(p) for p in positions)
            if params is None:
                params = (transforms.initial_linear_parameters(self.transform, ndim)
                          if self.transform in transforms.LINEAR else
                          transforms.initial_deformable_parameters(
                              self.transform, shape, self.grid_spacing, level_shape))
            elif self.transform == "dense":
                params = transforms.upsample_dense(params, previous_positions, positions)
            previous_positions = positions
            sigma = 0.5 * factor if factor > 1 else 0.0
            fixed_level = _smooth(fixed, sigma)[tuple(slice(None, None, factor)
                                                      for _ in range(ndim))]
            moving_smooth = _smooth(moving, sigma)
            objective = functools.partial(
                self._level_loss, fixed_level=fixed_level, moving_smooth=moving_smooth,
                initial_matrix=initial_matrix, shape=shape, positions=positions,
                factor=factor, similarity_loss=similarity_loss, spacing=spacing,
            )
            params, history = self._optimise(objective, params, tx, steps)
            histories.append(history)
        full = _positions(shape, 1)
        if self.transform == "dense" and self.levels[-1] != 1:
            params_full = transforms.upsample_dense(params, previous_positions, full)
        else:
            params_full = params
        coords = self.mapping(params_full, initial_matrix, shape, full, spacing)
        displacement = coords - _grid(full)
        matrix = (initial_matrix @ transforms.linear_matrix(self.transform, params, shape,
                                                            spacing)
                  if self.transform in transforms.LINEAR else initial_matrix)
        return {
            "displacement": displacement,
            "matrix": matrix,
            "warped": spatial.sample(moving, coords, cval=jnp.min(moving)),
            "loss": jnp.concatenate(histories),
            "params": params_full,
        }

    def _optimise(self, objective, params, tx, steps):
        value_and_grad = (jax.value_and_grad(objective) if self.optimizer == "adam"
                          else optax.value_and_grad_from_state(objective))

        def step(carry, _):
            params, state = carry
            if self.optimizer == "adam":
                value, grad = value_and_grad(params)
                updates, state = tx.update(grad, state, params)
            else:
                value, grad = value_and_grad(params, state=state)
                updates, state = tx.update(grad, state, params, value=value, grad=grad,
                                           value_fn=objective)
            return (optax.apply_updates(params, updates), state), value

        (params, _), history = jax.lax.scan(step, (params, tx.init(params)), None,
                                            length=steps)
        return params, history

    # -- a batch ---------------------------------------------------------------------

    @functools.partial(jax.jit, static_argnames=("self", "similarity_loss", "spacing"))
    def __call__(
        self,
        fixed: jnp.ndarray,
        moving: jnp.ndarray,
        initial_matrix: jnp.ndarray | None = None,
        similarity_loss: SimilarityLoss | None = None,
        spacing: tuple[float, ...] | None = None,
    ) -> dict[str, jnp.ndarray]:
        """``register_pair`` vmapped over a batch ``[B, *S, C]`` (and
        ``initial_matrix [B, ndim+1, ndim+1]``), jitted; ``spacing`` is
        shared by the batch."""
        if initial_matrix is None:
            ndim = fixed.ndim - 2
            initial_matrix = jnp.broadcast_to(jnp.eye(ndim + 1), (fixed.shape[0],) +
                                              (ndim + 1,) * 2)
        return jax.vmap(
            lambda f, m, a: self.register_pair(f, m, a, similarity_loss, spacing)
        )(fixed, moving, initial_matrix)
