"""Points predicted from new images by a trained run (``medjax-predict`` on a
detection or landmark run: tasks whose ``prediction_role()`` is ``points``).

The input is read, oriented and resampled as the segmentation predictor does
(``medjax.inferers.segmentation``: display orientation, the training data's
spacing, its intensity normalisation), the model applied through the task's
``predict``, and ``decode`` (for one example: ``points``, ``scores``, ``valid``,
and ``boxes`` when the task gives them) read on the host, with the task's
``point_names`` (landmarks) as a ``name`` column. A 2D model on a volume runs slice
by slice along the display's third axis; every slice's candidates are pooled
(no suppression across slices).

Coordinates written:

- ``voxel_<a>``: the point in the INPUT's own voxel index order (its array
  axes, before any reorientation or resampling), sub-voxel;
- ``x_mm, y_mm, z_mm``: world (RAS+, mm) through the input's affine, for NIfTI
  and DICOM inputs (empty for a PNG, which has no geometry);
- ``box_min_<a>, box_max_<a>``: the box in the input's voxel indices (its two
  corners mapped, then ordered per axis), when the task gives boxes.

``write_points`` writes them as CSV (one row per valid candidate, by
descending score) and as JSON beside it (``.json``, with the input and the
checkpoint's step); ``write_overlay`` draws them over the image.
"""

import csv
import dataclasses
import io as text_io
import os
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from medjax import files
from medjax.data import io, preprocess
from medjax.errors import ConfigError
from medjax.inferers.segmentation import (
    check_input,
    restore_model,
    to_display_orientation,
)
from medjax.runtime import compiler_options


@dataclasses.dataclass(frozen=True)
class PointPredictions:
    """Valid candidates of one input, by descending score.

    Attributes:
        voxels: ``[N, ndim]`` in the input's voxel index order.
        scores: ``[N]``.
        world: ``[N, 3]`` RAS+ mm, or None (PNG).
        boxes: ``[N, 2 * ndim]`` in the input's voxel indices, or None.
        names: ``N`` names (landmarks), or None.
        display: ``(image [*S], points [N, ndim], boxes [N, 2 * ndim] | None)`` in
            the display orientation, for the overlay.
    """

    voxels: np.ndarray
    scores: np.ndarray
    world: np.ndarray | None = None
    boxes: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    display: tuple | None = None


@dataclasses.dataclass
class Locator:
    """A restored model that finds points, and what its inputs must look like.

    Attributes:
        locate_batch: jitted ``[B, *S, C]`` -> the task's decoded dict with a
            leading ``B`` axis.
        spatial_dims: the model's, 2 or 3.
        normalize: raw intensities -> model inputs.
        spacing: the training data's voxel size (None: unknown).
        step: the checkpoint's step.
    """

    locate_batch: Callable[[jnp.ndarray], dict]
    spatial_dims: int
    normalize: Callable[[np.ndarray], np.ndarray]
    spacing: tuple[float, ...] | None
    step: int
    slice_batch_size: int = 16

    def __call__(self, volume: io.Volume) -> PointPredictions:
        ndim = check_input(volume, self.spatial_dims)
        shown, _, _ = to_display_orientation(volume)
        resampled = shown
        if self.spacing is not None and volume.source != "png":
            target = (
                self.spacing
                if ndim == len(self.spacing)
                else (tuple(self.spacing[:2]) + tuple(shown.spacing[2:]))
            )
            resampled = preprocess.resample_to_spacing(shown, target)
        image = np.asarray(resampled.array, np.float32)
        if volume.source == "png":  # grey levels 0..255 as the window's [-1, 1]
            image = image / 255.0 * 2.0 - 1.0
        else:
            image = np.asarray(self.normalize(image), np.float32)
        found = self._locate(image, ndim)
        keep = np.flatnonzero(found["valid"])
        keep = keep[np.argsort(-found["scores"][keep], kind="stable")]
        points = found["points"][keep].astype(np.float64)
        boxes = found["boxes"][keep].astype(np.float64) if "boxes" in found else None
        names = (
            tuple(str(n) for n in found["names"][keep]) if "names" in found else None
        )
        # Resampled grid -> world -> the input's and the display's voxel indices.
        to_input = _index_map(resampled.affine, volume.affine)
        to_display = _index_map(resampled.affine, shown.affine)
        world = None if volume.source == "png" else _apply(resampled.affine, points)
        return PointPredictions(
            voxels=to_input(points),
            scores=found["scores"][keep].astype(np.float64),
            world=world,
            boxes=None if boxes is None else _map_boxes(boxes, to_input),
            names=names,
            display=(
                np.asarray(shown.array, np.float32),
                to_display(points),
                None if boxes is None else _map_boxes(boxes, to_display),
            ),
        )

    def _locate(self, image: np.ndarray, ndim: int) -> dict[str, np.ndarray]:
        if self.spatial_dims == ndim:
            out = jax.device_get(self.locate_batch(image[None, ..., None]))
            return {k: np.asarray(v)[0] for k, v in out.items()}
        # A 2D model on a volume: slices along the third axis, pooled.
        slices = np.moveaxis(image, 2, 0)[..., None]
        parts = []
        for start in range(0, len(slices), self.slice_batch_size):
            out = jax.device_get(
                self.locate_batch(slices[start : start + self.slice_batch_size])
            )
            count = len(out["scores"])
            depth = np.arange(start, start + count, dtype=np.float32)
            depth = np.broadcast_to(
                depth[:, None, None], out["points"].shape[:2] + (1,)
            )
            part = {k: np.asarray(v) for k, v in out.items()}
            part["points"] = np.concatenate([part["points"], depth], -1)
            if "boxes" in part:
                b = part["boxes"]
                part["boxes"] = np.concatenate(
                    [b[..., :2], depth, b[..., 2:], depth], -1
                )
            parts.append(part)
        return {
            k: np.concatenate([p[k].reshape((-1,) + p[k].shape[2:]) for p in parts])
            for k in parts[0]
        }


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[N, 3]`` world of ``points [N, ndim]`` voxel indices (missing axes 0)."""
    homogeneous = np.zeros((len(points), 4))
    homogeneous[:, : points.shape[1]] = points
    homogeneous[:, 3] = 1.0
    return (homogeneous @ np.asarray(affine, np.float64).T)[:, :3]


def _index_map(source: np.ndarray, target: np.ndarray) -> Callable:
    """Voxel indices of one grid -> those of another, through world."""
    inverse = np.linalg.inv(np.asarray(target, np.float64))

    def mapped(points: np.ndarray) -> np.ndarray:
        world = _apply(source, points)
        homogeneous = np.concatenate([world, np.ones((len(world), 1))], -1)
        return (homogeneous @ inverse.T)[:, : points.shape[1]]

    return mapped


def _map_boxes(boxes: np.ndarray, mapped: Callable) -> np.ndarray:
    ndim = boxes.shape[1] // 2
    low, high = mapped(boxes[:, :ndim]), mapped(boxes[:, ndim:])
    return np.concatenate([np.minimum(low, high), np.maximum(low, high)], -1)


def load_locator(
    task,
    model,
    tx,
    data,
    run_dir: str,
    checkpoint="best",
    *,
    best_metric=None,
    best_mode="max",
    seed: int = 0,
) -> Locator:
    """Restores ``checkpoint`` of ``run_dir`` and wraps the task's ``predict``
    and its one-example ``decode``, mapped over a batch."""
    state, step = restore_model(
        model,
        tx,
        run_dir,
        checkpoint,
        best_metric=best_metric,
        best_mode=best_mode,
        seed=seed,
    )

    names = getattr(task, "point_names", None)  # landmarks: one name per point

    def one(outputs):
        return task.decode(jax.tree.map(lambda a: a[None], outputs))

    @partial(jax.jit, compiler_options=compiler_options())
    def traced(inputs):
        def apply(x):
            return state.apply_fn(state.variables(), x, train=False)

        return jax.vmap(one)(task.predict(apply, inputs))

    def locate_batch(inputs):
        out = dict(traced(inputs))
        if names is not None:
            out["names"] = np.broadcast_to(np.asarray(names), out["scores"].shape)
        return out

    return Locator(
        locate_batch=locate_batch,
        spatial_dims=getattr(model, "spatial_dims", 2),
        normalize=data.normalize or (lambda x: np.asarray(x, np.float32)),
        spacing=data.spacing,
        step=step,
    )


def columns(predictions: PointPredictions) -> tuple[list[str], list[list]]:
    """The CSV's header and rows (module docstring)."""
    ndim = predictions.voxels.shape[1] if predictions.voxels.ndim == 2 else 2
    header = ["index"] + (["name"] if predictions.names is not None else []) + ["score"]
    header += [f"voxel_{a}" for a in range(ndim)]
    header += ["x_mm", "y_mm", "z_mm"]
    if predictions.boxes is not None:
        header += [f"box_min_{a}" for a in range(ndim)]
        header += [f"box_max_{a}" for a in range(ndim)]
    rows = []
    for i in range(len(predictions.scores)):
        row = [i] + ([predictions.names[i]] if predictions.names is not None else [])
        row += [_number(predictions.scores[i])]
        row += [_number(v) for v in predictions.voxels[i]]
        row += (
            [_number(v) for v in predictions.world[i]]
            if predictions.world is not None
            else ["", "", ""]
        )
        if predictions.boxes is not None:
            row += [_number(v) for v in predictions.boxes[i]]
        rows.append(row)
    return header, rows


def _number(value) -> float:
    return round(float(value), 4)


def json_path(csv_path: str) -> str:
    stem = csv_path[:-4] if csv_path.lower().endswith(".csv") else csv_path
    return stem + ".json"


def write_points(
    predictions: PointPredictions,
    path: str,
    *,
    source: str = "",
    step: int | None = None,
) -> tuple[str, str]:
    """Writes the CSV at ``path`` and the JSON beside it, each atomically.

    Returns:
        The two paths.

    Raises:
        ConfigError: ``path`` does not end in ``.csv``.
        WriteError: a file could not be written (a previous one is kept).
    """
    if not str(path).lower().endswith(".csv"):
        raise ConfigError(
            f"output={path}: points are written as CSV; expected a .csv path"
        )
    header, rows = columns(predictions)
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    files.write_text(path, buffer.getvalue())
    other = json_path(str(path))
    files.write_json(
        other,
        {
            "input": source,
            "step": step,
            "coordinates": "voxel_*: the input's voxel indices; *_mm: world RAS+ mm",
            "candidates": [dict(zip(header, row)) for row in rows],
        },
    )
    return str(path), other


def write_overlay(
    predictions: PointPredictions,
    path: str,
    normalize,
    *,
    source: str,
    threshold: float = 0.0,
) -> None:
    """A PNG of the image (display orientation; a volume at the best candidate's
    slice) with the candidates above ``threshold`` coloured by score."""
    from medjax.viz.detection import draw_detections

    image, points, boxes = predictions.display
    if source != "png":
        image = np.asarray(normalize(image), np.float32)
    ndim = image.ndim
    if boxes is None:  # landmarks: a one-voxel box around each point
        boxes = (
            np.concatenate([points, points], -1)
            if len(points)
            else np.zeros((0, 2 * ndim))
        )
    draw_detections(
        [image],
        [np.zeros((0, 2 * ndim))],
        [boxes],
        [predictions.scores],
        path,
        points=[points],
        threshold=threshold,
        panel_titles=[f"{len(predictions.scores)} candidates"],
    )


def locate_file(
    locator: Locator,
    volume: io.Volume,
    output_path: str,
    overlay_path: str,
    *,
    threshold: float = 0.0,
) -> tuple[PointPredictions, tuple[str, str]]:
    """What ``medjax-predict`` does with one input read already: find the
    points, write the CSV and JSON to ``output_path`` and the overlay PNG."""
    if not str(output_path).lower().endswith(".csv"):
        raise ConfigError(
            f"output={output_path}: points are written as CSV; expected a .csv path"
        )
    predictions = locator(volume)
    written = write_points(
        predictions, output_path, source=str(volume.path or ""), step=locator.step
    )
    write_overlay(
        predictions,
        overlay_path,
        locator.normalize,
        source=volume.source,
        threshold=threshold,
    )
    return predictions, written
