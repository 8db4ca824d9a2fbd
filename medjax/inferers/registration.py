"""Register image files: the engine of ``medjax-register``.

A pair of volumes (``medjax.data.io.Volume``: NIfTI, a DICOM series, PNG) is
registered in stages (e.g. rigid, then affine, then a B-spline), each stage an
``IterativeRegistration`` started from the last one's map, the first from the
images' own geometry (``world.initial_voxel_map``) or from their intensity
centres of mass (``initialize="moments"``, ITK's moments initialiser). The
result is written in the formats ITK-based tools read (``world``): the warped
moving image on the fixed grid, an ITK affine file of the linear part, the
whole map as a displacement-field NIfTI, and any moving label map warped by
nearest neighbour.
"""

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from medjax.data import io
from medjax.data.io.volume import Volume, format_error
from medjax.errors import ConfigError
from medjax.tasks.registration import transforms, world


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage's result: its transform kind, the similarity loss at its first
    and last iteration (finest level) and its wall-clock seconds."""

    transform: str
    first_loss: float
    last_loss: float
    seconds: float


@dataclasses.dataclass(frozen=True, eq=False)
class FileRegistration:
    """A registered pair on the fixed image's grid.

    Attributes:
        matrix: ``[ndim+1, ndim+1]`` fixed voxel -> moving voxel map of the
            linear stages (the images' geometry included).
        displacement: ``[*S, ndim]`` the whole map as a pull-back field (fixed
            voxel ``x`` reads moving voxel ``x + d(x)``).
        stages: one ``Stage`` per stage.
    """

    matrix: np.ndarray
    displacement: np.ndarray
    stages: tuple[Stage, ...]


def spatial_array(volume: Volume, name: str) -> np.ndarray:
    """The single-channel 2D or 3D array of an image (a trailing singleton
    axis of a 2D NIfTI dropped), float32.

    Raises:
        ImageFormatError: a multi-channel or 4D image.
    """
    array = np.asarray(volume.array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise format_error(
            volume.path or name,
            f"{name}: expected a single-channel 2D or 3D image, got shape {array.shape}",
        )
    return array.astype(np.float32)


def check_pair(fixed: np.ndarray, moving: np.ndarray, fixed_name: str,
               moving_name: str) -> None:
    """One line when the two images have different numbers of spatial axes."""
    if fixed.ndim != moving.ndim:
        raise format_error(
            moving_name,
            f"moving image is {moving.ndim}D {moving.shape} but fixed={fixed_name} is "
            f"{fixed.ndim}D {fixed.shape}: register images of the same dimension",
        )


def normalize(array: np.ndarray) -> np.ndarray:
    """Intensities mapped to [0, 1] by their 0.5th and 99.5th percentiles
    (robust to a few hot voxels), clipped."""
    low, high = np.percentile(array, [0.5, 99.5])
    return np.clip((array - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)


def _centre_of_mass(array: np.ndarray) -> np.ndarray:
    weights = np.clip(array, 0, None)
    grid = np.indices(array.shape, dtype=np.float64)
    total = max(weights.sum(), 1e-12)
    return np.array([(g * weights).sum() / total for g in grid])


def initial_map(fixed: np.ndarray, moving: np.ndarray, fixed_affine: np.ndarray,
                moving_affine: np.ndarray, initialize: str) -> np.ndarray:
    """The first stage's fixed voxel -> moving voxel map: the geometry, plus
    with ``moments`` the world translation that aligns the intensity centres
    of mass."""
    ndim = fixed.ndim
    geometry = world.initial_voxel_map(fixed_affine, moving_affine, ndim)
    if initialize == "geometry":
        return geometry
    if initialize != "moments":
        raise ValueError(f"initialize: expected geometry or moments, got {initialize!r}")
    a_fixed = world.spatial_affine(fixed_affine, ndim)
    a_moving = world.spatial_affine(moving_affine, ndim)
    shift = np.eye(ndim + 1)
    shift[:ndim, ndim] = (world.apply(a_moving, _centre_of_mass(moving))
                          - world.apply(a_fixed, _centre_of_mass(fixed)))
    return np.linalg.inv(a_moving) @ shift @ a_fixed


#: The stage names that must come last: a deformable transform, or the learned
#: network (``inferers.learned_registration``), which reads the images itself.
LAST_STAGES = (*transforms.DEFORMABLE, "learned")


def check_stages(stages: list[str]) -> None:
    """Stages (transform names) chain through their linear maps: a deformable
    or learned one must be last.

    Raises:
        ConfigError: no stage, or a deformable or learned stage before another.
    """
    if not stages:
        raise ConfigError("method: expected at least one stage, e.g. [rigid, affine]")
    for stage in stages[:-1]:
        if stage in LAST_STAGES:
            raise ConfigError(f"method: a {'learned' if stage == 'learned' else 'deformable'} "
                              f"stage ({stage}) must come last")


def register_arrays(
    fixed: np.ndarray,
    moving: np.ndarray,
    first_map: np.ndarray,
    methods: list,
    spacing: tuple[float, ...] | None = None,
) -> FileRegistration:
    """Run the stages in turn on one pair of (normalised) arrays.

    Args:
        fixed: ``[*S]``; moving: ``[*M]`` (another grid allowed).
        first_map: the first stage's initial voxel map.
        methods: one ``IterativeRegistration`` per stage (or, last, a
            ``learned_registration.LearnedStage``); a deformable stage must be
            the last.
        spacing: the fixed image's voxel size (mm), for linear transforms.
    """
    import jax
    import jax.numpy as jnp

    check_stages([method.transform for method in methods])
    matrix = np.asarray(first_map, np.float32)
    stages, out = [], None
    fixed_batch = jnp.asarray(fixed)[None, ..., None]
    moving_batch = jnp.asarray(moving)[None, ..., None]
    for method in methods:
        start = time.perf_counter()
        out = jax.block_until_ready(
            method(fixed_batch, moving_batch, jnp.asarray(matrix)[None], spacing=spacing)
        )
        loss = np.asarray(out["loss"][0])
        stages.append(Stage(method.transform, float(loss[-method.iterations[-1]]),
                            float(loss[-1]), time.perf_counter() - start))
        matrix = np.asarray(out["matrix"][0])
    return FileRegistration(
        matrix=matrix,
        displacement=np.asarray(out["displacement"][0]),
        stages=tuple(stages),
    )


def warp_array(array: np.ndarray, displacement: np.ndarray, order: int,
               cval: float = 0.0) -> np.ndarray:
    """``array [*M]`` read at ``x + d(x)`` for every fixed voxel ``x``
    (``order`` 1 linear for images, 0 nearest for label maps)."""
    import jax.numpy as jnp

    from medjax.ops import displacement as dense_fields

    values = jnp.asarray(array)
    if order == 0:
        values = values.astype(jnp.int32)
    warped = dense_fields.warp_displacement(values, jnp.asarray(displacement), order=order,
                                            cval=cval)
    return np.asarray(warped)


def write_result(
    result: FileRegistration,
    fixed: Volume,
    moving: Volume,
    output: str | os.PathLike,
    *,
    moving_image: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, Path]:
    """Writes the result into directory ``output``.

    Files: ``warped.nii.gz`` (the moving image's own intensities, resampled on
    the fixed grid), ``transform.tfm`` (ITK affine, linear stages),
    ``displacement.nii.gz`` (ITK displacement field of the whole map),
    ``warped_labels.nii.gz`` (with ``labels``), ``summary.json``.

    Returns:
        ``{name: path}`` of the files written.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    ndim = result.displacement.shape[-1]
    affine = np.asarray(fixed.affine, np.float64)
    like = fixed if fixed.source == "nifti" else None
    written = {}
    warped = warp_array(moving_image, result.displacement, 1, float(moving_image.min()))
    written["warped"] = io.save_nifti(warped.astype(np.float32), output / "warped.nii.gz",
                                      affine=affine, like=like)
    written["transform"] = world.write_itk_affine(
        output / "transform.tfm", world.world_map(result.matrix, fixed.affine, moving.affine)
    )
    field = world.displacement_field_lps(result.displacement, fixed.affine, moving.affine)
    written["displacement"] = world.save_displacement_nifti(
        output / "displacement.nii.gz", field, affine
    )
    if labels is not None:
        warped_labels = warp_array(labels, result.displacement, 0)
        written["warped_labels"] = io.save_nifti(
            warped_labels, output / "warped_labels.nii.gz", affine=affine, like=like
        )
    summary = {
        "fixed": fixed.path,
        "moving": moving.path,
        "dimensions": ndim,
        "stages": [dataclasses.asdict(stage) for stage in result.stages],
        "matrix_voxels": result.matrix.tolist(),
        "files": {name: path.name for name, path in written.items()},
    }
    path = output / "summary.json"
    temporary = path.with_name("summary.json.tmp")
    temporary.write_text(json.dumps(summary, indent=2))
    os.replace(temporary, path)
    written["summary"] = path
    return written
