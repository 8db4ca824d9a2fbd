"""The ``learned`` stage of ``medjax-register``: a trained ``task=registration``
run's network (VoxelMorph-style, diffeomorphic or affine) applied to a file pair.

The network was trained on pairs on one grid, in the training data's intensity
convention, so the stage first resamples the moving image onto the fixed grid
through the map the earlier stages (or the images' geometry) give, maps both
images as the training data were mapped (``Dataset.normalize``: the CT window
of the phantoms; a PNG's grey levels 0..255 as a rendering of [-1, 1]; the MR
twin of a CT<->MR run divided by ``pipeline.MR_SCALE``), and predicts the
transform on the fixed grid in one forward pass. That transform is composed
with the map it started from: fixed voxel ``x`` reads moving voxel
``M (x + d(x))`` for a dense field ``d`` (``M (A x)`` for an affine ``A``).

A 2D network registers 2D images; volumes go to a 3D network as they are, in
the array layout the run was trained on (no reorientation).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from medjax.data import pipeline
from medjax.data.io.volume import Volume
from medjax.errors import ConfigError
from medjax.inferers.segmentation import model_intensities, restore_model


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedModel:
    """A restored registration network and what its inputs must look like.

    Attributes:
        apply: jitted ``[1, *S, 2]`` (fixed, moving) -> the model's outputs.
        task: the run's ``RegistrationTask`` (its similarity, its warp).
        spatial_dims: 2 or 3, the model's.
        normalize_fixed / normalize_moving: raw intensities -> model inputs.
        spacing: the training data's voxel size (mm; None: unknown).
        step: the checkpoint's step.
        run_dir: where it came from.
    """

    apply: Callable[[jnp.ndarray], jnp.ndarray]
    task: object
    spatial_dims: int
    normalize_fixed: Callable[[np.ndarray], np.ndarray]
    normalize_moving: Callable[[np.ndarray], np.ndarray]
    spacing: tuple[float, ...] | None
    step: int
    run_dir: str

    def stage(self, fixed: Volume, moving: Volume, fixed_array: np.ndarray,
              moving_array: np.ndarray) -> "LearnedStage":
        """The stage for one pair: both images in the model's convention."""
        if fixed_array.ndim != self.spatial_dims:
            raise ConfigError(
                f"run_dir={self.run_dir}: a {self.spatial_dims}D registration network "
                f"cannot register {fixed_array.ndim}D images"
            )
        return LearnedStage(
            model=self,
            fixed=model_intensities(fixed, fixed_array, self.normalize_fixed),
            moving=model_intensities(moving, moving_array, self.normalize_moving),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedStage:
    """The network as a stage of ``inferers.registration.register_arrays``:
    called like ``IterativeRegistration`` (a batch of one pair and the map to
    start from) but reading its own, model-convention copies of the images.

    ``loss`` holds the run's similarity (as a loss) of the fixed image against
    the moving one before and after the network's transform."""

    model: LearnedModel
    fixed: np.ndarray
    moving: np.ndarray
    transform: str = "learned"
    iterations: tuple[int, ...] = (2,)

    def __call__(self, fixed_batch, moving_batch, initial_matrix,
                 spacing=None) -> dict[str, jnp.ndarray]:
        del fixed_batch, moving_batch, spacing  # the network reads its own copies
        return _apply_stage(self.model.apply, self.model.task, jnp.asarray(self.fixed),
                            jnp.asarray(self.moving), jnp.asarray(initial_matrix[0]))


def _apply_stage(apply, task, fixed, moving, matrix):
    from medjax.losses import registration as registration_losses
    from medjax.ops import displacement as dense_fields
    from medjax.ops import spatial

    shape = tuple(fixed.shape)
    grid = spatial.identity_grid(shape)
    start = spatial.apply_homogeneous(matrix, grid) - grid
    moving_on_fixed = dense_fields.warp_displacement(
        moving[..., None], start, cval=jnp.min(moving)
    )
    pair = {"fixed": fixed[None, ..., None], "moving": moving_on_fixed[None]}
    outputs = apply(task.inputs(pair))
    field = task.displacement(outputs, pair)
    warped = task.warp(pair["moving"], field)

    def loss(image):  # both backgrounds at zero, as the task trains
        return registration_losses.similarity_loss(
            task.similarity, *task._background_at_zero(pair["fixed"], image, pair),
            **dict(task.similarity_options),
        )

    total = spatial.apply_homogeneous(matrix, grid + field[0]) - grid
    linear = matrix @ outputs[0] if task.is_affine(outputs) else matrix
    return {
        "loss": jnp.stack([loss(pair["moving"]), loss(warped)], axis=-1),
        "matrix": linear[None],
        "displacement": total[None],
    }


def load_learned(run_dir: str, checkpoint: str | int = "best") -> LearnedModel:
    """Restores checkpoint ``checkpoint`` of the ``task=registration`` run in
    ``run_dir``.

    Raises:
        RunDirectoryError: not a medjax-train run directory.
        ConfigError: a run of another task.
    """
    from medjax.cli.common import run_config
    from medjax.config.run import build_run
    from medjax.runtime import compiler_options
    from medjax.tasks.registration.task import RegistrationTask

    train_cfg = run_config("medjax-register", run_dir)
    run = build_run(train_cfg)
    task, data = run.task, run.data
    if not isinstance(task, RegistrationTask):
        raise ConfigError(
            f"run_dir={run_dir}: the learned stage needs a task=registration run; "
            f"this run's task is {type(task).__name__}"
        )
    state, step = restore_model(
        run.model, run.tx, run_dir, checkpoint, best_metric=train_cfg.trainer.best_metric,
        best_mode=train_cfg.trainer.best_mode, seed=train_cfg.seed, channels=2,
    )
    apply = jax.jit(lambda x: state.apply_fn(state.variables(), x, train=False),
                    compiler_options=compiler_options())
    normalize = data.normalize or (lambda x: np.asarray(x, np.float32))
    moving = normalize if task.moving_image_key is None else _mr_convention
    return LearnedModel(
        apply=apply, task=task, spatial_dims=getattr(run.model, "spatial_dims", 2),
        normalize_fixed=normalize, normalize_moving=moving,
        spacing=None if data.spacing is None else tuple(data.spacing), step=step,
        run_dir=str(run_dir),
    )


def _mr_convention(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, np.float32) / pipeline.MR_SCALE

