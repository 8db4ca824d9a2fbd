"""Segmenting new images with a trained run (``medjax-predict``).

A run directory's ``config.yaml`` says which task, model and intensity
normalisation it was trained with; its checkpoint holds the weights. A NIfTI
file, a DICOM series (directory or file) or a PNG is read with
``medjax.data.io``, normalised like the training data, resampled to the training
data's voxel spacing when both are known, segmented (2D models slice by slice
along the third index axis, 3D models whole, both through the task's
sliding-window ``predict``) and written back in the input's format and geometry.

Volumes are turned to the layout the phantoms are drawn in before a model sees
them, and the mask turned back: rows run anterior to posterior, columns from the
patient's right to left (radiological display), slices caudal to cranial
(``DISPLAY_AXES``, nibabel axis codes). DICOM and NIfTI volumes are reoriented
by their affine; PNGs and 2D images are taken as displayed.
"""

import dataclasses
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from medjax.data import io, preprocess
from medjax.engine.evaluate import restore_checkpoint
from medjax.engine.state import create_train_state
from medjax.errors import ConfigError
from medjax.viz import overlay
from medjax.runtime import compiler_options, random_key

# nibabel axis codes of the phantoms' array axes: toward Posterior, Left, Superior.
DISPLAY_AXES = ("P", "L", "S")


@dataclasses.dataclass
class Segmenter:
    """A restored model and what its inputs must look like.

    Attributes:
        segment_batch: jitted ``[B, *S, C]`` inputs -> ``[B, *S]`` labels (the
            task's ``decode`` of its ``predict``).
        spatial_dims: 2 or 3, the model's.
        normalize: raw intensities (HU for CT) -> model inputs.
        spacing: voxel size the model was trained at (None: unknown).
        step: the checkpoint's step.
    """

    segment_batch: Callable[[jnp.ndarray], jnp.ndarray]
    spatial_dims: int
    normalize: Callable[[np.ndarray], np.ndarray]
    spacing: tuple[float, ...] | None
    step: int
    slice_batch_size: int = 16

    def __call__(self, volume: io.Volume) -> np.ndarray:
        """The label map ``[*S]`` (uint8) of ``volume`` on its own grid."""
        ndim = check_input(volume, self.spatial_dims)
        volume, _, back = to_display_orientation(volume)
        resampled = volume
        if self.spacing is not None and volume.source != "png":
            target = self.spacing if ndim == len(self.spacing) else (
                tuple(self.spacing[:2]) + tuple(volume.spacing[2:])
            )
            resampled = preprocess.resample_to_spacing(volume, target)
        image = self._normalize(volume, np.asarray(resampled.array))
        if self.spatial_dims == ndim:
            labels = np.asarray(self.segment_batch(image[None, ..., None]))[0]
        else:  # 2D model, 3D volume: slices along the third index axis
            slices = np.moveaxis(image, 2, 0)[..., None]
            parts = [
                np.asarray(self.segment_batch(slices[i:i + self.slice_batch_size]))
                for i in range(0, len(slices), self.slice_batch_size)
            ]
            labels = np.moveaxis(np.concatenate(parts), 0, 2)
        if resampled is not volume:
            labels = _back_to_grid(labels, resampled, volume)
        return back(labels).astype(np.uint8)

    def _normalize(self, volume: io.Volume, array: np.ndarray) -> np.ndarray:
        return model_intensities(volume, array, self.normalize)


def model_intensities(volume: io.Volume, array: np.ndarray, normalize) -> np.ndarray:
    """``array`` of ``volume`` as a model trained with ``normalize`` saw its
    inputs: a PNG is taken as a display rendering of the training window (grey
    levels 0..255 to [-1, 1]); other images go through ``normalize``."""
    if volume.source == "png":
        return (np.asarray(array, np.float32) / 255.0) * 2.0 - 1.0
    return np.asarray(normalize(np.asarray(array, np.float32)), np.float32)


def check_input(volume: io.Volume, spatial_dims: int) -> int:
    """The spatial rank of an input a ``spatial_dims``-D model can read: one
    grey-level image or volume, at least as many spatial axes as the model's.

    Raises:
        ConfigError: extra (channel or time) axes, or too few spatial axes.
    """
    array = np.asarray(volume.array)
    ndim = volume.spatial_ndim
    if array.ndim > ndim:
        raise ConfigError(
            f"input={volume.path}: {array.ndim - ndim} extra axes (channels or "
            "time); expected one grey-level image or volume"
        )
    if ndim < spatial_dims:
        raise ConfigError(f"input={volume.path}: a {ndim}D image for a {spatial_dims}D model")
    return ndim


def to_display_orientation(volume: io.Volume):
    """``volume`` with its array axes permuted and flipped to ``DISPLAY_AXES`` (and
    its affine to match), and the functions that turn an array of the original
    layout into that one and back. PNGs and 2D images are returned as they are."""
    import nibabel.orientations as orientations

    if volume.source == "png" or volume.spatial_ndim != 3:
        return volume, (lambda array: array), (lambda array: array)
    current = orientations.io_orientation(volume.affine)
    forward = orientations.ornt_transform(current, orientations.axcodes2ornt(DISPLAY_AXES))
    backward = orientations.ornt_transform(orientations.axcodes2ornt(DISPLAY_AXES), current)
    shape = volume.spatial_shape
    array = orientations.apply_orientation(volume.array, forward)
    affine = volume.affine @ orientations.inv_ornt_aff(forward, shape)
    reoriented = dataclasses.replace(volume, array=array, affine=affine, datasets=())
    return (
        reoriented,
        lambda labels: orientations.apply_orientation(labels, forward),
        lambda labels: orientations.apply_orientation(labels, backward),
    )


def _back_to_grid(labels: np.ndarray, resampled: io.Volume, original: io.Volume) -> np.ndarray:
    """Nearest-neighbour labels on ``original``'s grid (voxel 0 shared, as
    ``preprocess.resample_to_spacing`` keeps it)."""
    on_grid = preprocess.resample_to_spacing(
        dataclasses.replace(resampled, array=labels), original.spacing, order=0
    ).array
    # Rounding may leave a voxel more or less at the far end of an axis.
    target = original.spatial_shape
    on_grid = np.pad(on_grid, [(0, max(0, t - s)) for s, t in zip(on_grid.shape, target)],
                     mode="edge")
    return on_grid[tuple(slice(0, t) for t in target)]


def restore_model(model, tx, run_dir: str, checkpoint="best", *, best_metric=None,
                  best_mode="max", seed: int = 0, channels: int = 1):
    """The training state of checkpoint ``checkpoint`` of ``run_dir`` for
    ``model`` (reading ``channels`` input channels) and its step (shared by
    every predictor of ``medjax-predict`` and ``medjax-register``)."""
    spatial_dims = getattr(model, "spatial_dims", 2)
    sample = jnp.zeros((1,) + (16,) * spatial_dims + (channels,), jnp.float32)
    template = jax.jit(lambda key: create_train_state(model, tx, sample, key))(
        random_key(seed)
    )
    return restore_checkpoint(
        template, run_dir, checkpoint, best_metric=best_metric, best_mode=best_mode
    )


def load_segmenter(task, model, tx, data, run_dir: str, checkpoint="best", *,
                   best_metric=None, best_mode="max", seed: int = 0) -> Segmenter:
    """Restores checkpoint ``checkpoint`` of ``run_dir`` for ``model`` and wraps it
    with the task's whole-image ``predict`` and its ``decode`` (labels)."""
    spatial_dims = getattr(model, "spatial_dims", 2)
    state, step = restore_model(
        model, tx, run_dir, checkpoint, best_metric=best_metric, best_mode=best_mode,
        seed=seed,
    )

    @partial(jax.jit, compiler_options=compiler_options())
    def segment_batch(inputs):
        def apply(x):
            return state.apply_fn(state.variables(), x, train=False)

        return task.decode(task.predict(apply, inputs))

    return Segmenter(
        segment_batch=segment_batch, spatial_dims=spatial_dims,
        normalize=data.normalize or (lambda x: np.asarray(x, np.float32)),
        spacing=data.spacing, step=step,
    )


def write_overlay(volume: io.Volume, labels: np.ndarray, path: str, normalize) -> None:
    """A PNG of the slice with the most foreground (2D: the image) with the
    predicted contours in yellow, in the display orientation."""
    volume, forward, _ = to_display_orientation(volume)
    labels = forward(labels)
    image = np.asarray(volume.array, np.float32)
    if volume.source != "png":
        image = np.asarray(normalize(image), np.float32)
    if image.ndim == 3:
        k = int(np.argmax((labels > 0).reshape(-1, labels.shape[-1]).sum(0)))
        image, labels = image[..., k], labels[..., k]
    overlay.save_overlay_png(image, labels, path)


def segment_file(
    segmenter: Segmenter, input_path: str | io.Volume, output_path: str, overlay_path: str
) -> tuple[io.Volume, np.ndarray, str]:
    """What ``medjax-predict`` does with one input: reads ``input_path`` (NIfTI,
    PNG or a DICOM series; a Volume already read is used as it is), segments it with ``segmenter`` and writes the mask in
    the input's format and geometry to ``output_path`` and the overlay PNG to
    ``overlay_path`` (each atomically: a failed write keeps a previous file).

    Returns:
        The input volume, its label map ``[*S]`` (uint8, on the input's grid and in
        its index order) and the path the mask was written to.

    Raises:
        ImageFormatError: an unreadable input or an output the mask cannot go to.
        WriteError: an output could not be written.
    """
    # a Volume: the input already read (medjax-predict reads it before restoring
    # the model, so a bad file fails before anything is compiled)
    if isinstance(input_path, io.Volume):
        volume = input_path
    else:
        volume = io.load_image(input_path)
    labels = segmenter(volume)
    written = io.save_like(labels, volume, output_path)
    write_overlay(volume, labels, overlay_path, segmenter.normalize)
    return volume, labels, str(written)
