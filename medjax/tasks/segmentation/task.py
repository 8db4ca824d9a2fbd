"""Semantic segmentation of organs or lesions, 2D and 3D.

Training may run on patches (``patch_size``): one per example, a share
``foreground_fraction`` of them centred on foreground (``medjax.ops.crops``), then
augmented; evaluation always covers whole images or volumes, with jitted
sliding-window inference (Gaussian-weighted, overlapping, batched windows) when a
patch size is set.

Metrics over a split (conventions in ``medjax.metrics``):

- ``dice_<class>``, ``iou_<class>``: mean over the cases whose ground truth holds
  the class (MONAI ``ignore_empty=True``); ``dice`` and ``iou`` average them over
  the foreground classes (background excluded).
- ``hd95_<class>``, ``asd_<class>``: 95th-percentile Hausdorff and average
  symmetric surface distance, in ``spacing`` units (voxels when None), over the
  cases where both truth and prediction hold the class: a missed structure has no
  surface distance; it is counted by Dice (0) and by ``missed_<class>``, the
  share of cases with the class in the truth and none in the prediction.
  ``hd95`` and ``asd`` average the per-class values.
- Volumes only (3D data): ``slice_consistency_<class>``, the prediction's mean
  Dice between adjacent slices along the last (axial) axis minus the truth's
  (``medjax.metrics.slice_consistency``; 0 is as consistent as the truth,
  negative flickers more), over the cases where both hold the class;
  ``slice_consistency`` averages the classes.
- With ``lesion_metrics``: per-lesion ``lesion_sensitivity`` and
  ``lesion_precision`` by connected components, pooled over the split.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from medjax import losses, metrics
from medjax.data import schema as roles
from medjax.inferers import sliding_window
from medjax.metrics.slice_consistency import slice_consistency
from medjax.ops import crops
from medjax.tasks.base import Batch, Task

# The keyword options each loss takes from the task's fields.
_LOSS_OPTIONS = {
    "cross_entropy": ("class_weights",),
    "dice": ("include_background", "class_weights"),
    "dice_ce": ("include_background", "class_weights"),
    "focal": ("class_weights", "gamma"),
    "tversky": ("include_background", "class_weights", "alpha", "beta"),
}
#: The same, public: other tasks training with these losses (lesion detection).
LOSS_OPTIONS = _LOSS_OPTIONS


@dataclasses.dataclass(frozen=True)
class SegmentationTask(Task):
    """Voxel-wise softmax segmentation of ``batch[image_key]`` into
    ``num_classes`` labels given by ``batch[mask_key]``.

    Attributes:
        num_classes: label values 0..num_classes-1, 0 is background.
        class_names: one name per class, used in metric names (default
            ``class_<k>``).
        image_key / mask_key: the data's ``image`` field ``[B, *S, C]`` and
            its ``label_map`` (or ``instance_map``) field ``[B, *S]``.
        binary: map every non-zero mask value to 1 (lesion instance ids to
            lesion/no lesion); the instance ids still define lesions for
            ``lesion_metrics``.
        loss_function: one of ``cross_entropy``, ``dice``, ``dice_ce``, ``focal``,
            ``tversky`` (``medjax.losses.SEGMENTATION_LOSSES``).
        include_background: whether Dice/Tversky losses average class 0 too.
        class_weights: ``[num_classes]`` weights of the loss's classes.
        gamma: focal loss exponent. alpha / beta: Tversky weights of false
            positives and false negatives.
        patch_size: train on patches of this size (None: whole images); also the
            sliding window of evaluation.
        foreground_fraction: share of training patches centred on foreground.
        window_overlap / window_batch_size: sliding-window inference options.
        spacing: voxel size for surface distances (None: the data's, filled in
            by ``configure``; voxels when the data has none).
        lesion_metrics: compute per-lesion detection sensitivity and precision.
        num_figure_cases: cases drawn at each evaluation.
    """

    num_classes: int = 2
    class_names: tuple[str, ...] | None = None
    image_key: str = "image"
    mask_key: str = "mask"
    binary: bool = False
    loss_function: str = "dice_ce"
    include_background: bool = False
    class_weights: tuple[float, ...] | None = None
    gamma: float = 2.0
    alpha: float = 0.3
    beta: float = 0.7
    patch_size: tuple[int, ...] | None = None
    foreground_fraction: float = 1 / 3
    window_overlap: float = 0.5
    window_batch_size: int = 8
    spacing: tuple[float, ...] | None = None
    lesion_metrics: bool = False
    num_figure_cases: int = 4

    def __post_init__(self):
        for name in ("class_names", "class_weights", "patch_size", "spacing"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.num_classes < 2:
            raise ValueError(f"task.num_classes: expected >= 2, got {self.num_classes}")
        if self.binary and self.num_classes != 2:
            raise ValueError(f"task.num_classes: binary tasks have 2, got {self.num_classes}")
        if self.loss_function not in _LOSS_OPTIONS:
            raise ValueError(
                f"task.loss_function: expected one of {sorted(_LOSS_OPTIONS)}, "
                f"got {self.loss_function!r}"
            )
        for name in ("class_names", "class_weights"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise ValueError(
                    f"task.{name}: expected {self.num_classes} values, got {len(value)}"
                )
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(
                f"task.foreground_fraction: expected 0..1, got {self.foreground_fraction}"
            )
        if not 0.0 <= self.window_overlap < 1.0:
            raise ValueError(f"task.window_overlap: expected 0 <= overlap < 1, got {self.window_overlap}")
        if self.patch_size is not None and any(p < 1 for p in self.patch_size):
            raise ValueError(f"task.patch_size: expected positive sizes, got {self.patch_size}")

    @property
    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(f"class_{k}" for k in range(self.num_classes))

    primary_metric = "dice"

    def needs(self) -> dict[str, str]:
        return {self.image_key: roles.IMAGE, self.mask_key: roles.LABEL_MAP}

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> "Task":
        """Checks the data's roles; ``spacing: null`` becomes the data's voxel
        spacing (when it has one)."""
        task = super().configure(data, task_name=task_name, data_name=data_name)
        if task.spacing is None and data.spacing is not None:
            task = dataclasses.replace(task, spacing=data.spacing)
        return task

    def prediction_role(self) -> str | None:
        return roles.LABEL_MAP

    def decode(self, outputs: Any) -> jnp.ndarray:
        """Labels ``[B, *S]`` (uint8) from the logits ``[B, *S, K]``."""
        return jnp.argmax(outputs, axis=-1).astype(jnp.uint8)

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def labels(self, batch: Batch) -> jnp.ndarray:
        mask = batch[self.mask_key]
        return (mask > 0).astype(jnp.int32) if self.binary else mask.astype(jnp.int32)

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """In training with ``patch_size`` set, one patch per example,
        foreground-oversampled, cut at the same place from every dense field
        (image, label and instance maps, vector fields); else the whole batch
        (evaluation slides windows over whole images instead)."""
        if not train or self.patch_size is None:
            return batch
        corners = crops.sample_patch_corners(
            key, self.labels(batch), self.patch_size, num_classes=self.num_classes,
            foreground_fraction=self.foreground_fraction,
        )
        dense = roles.keys_of(self.batch_roles(), *roles.DENSE_KINDS)
        cropped = {
            field: crops.extract_patches(batch[field], corners, self.patch_size)
            for field in dense
        }
        return {**batch, **cropped}

    def predict(self, apply: Callable, inputs: jnp.ndarray) -> jnp.ndarray:
        """Logits ``[B, *S, K]`` of whole images: sliding windows of
        ``patch_size`` when it is set and smaller than the image."""
        spatial = inputs.shape[1:-1]
        if self.patch_size is None or tuple(self.patch_size) == tuple(spatial):
            return apply(inputs)
        return sliding_window.sliding_window_predict(
            apply, inputs, self.patch_size, overlap=self.window_overlap,
            window_batch_size=self.window_batch_size,
        )

    def _loss_per_example(self, logits, labels, valid):
        options = {name: getattr(self, name) for name in _LOSS_OPTIONS[self.loss_function]}
        if options.get("class_weights") is not None:
            options["class_weights"] = jnp.asarray(options["class_weights"], jnp.float32)
        return losses.SEGMENTATION_LOSSES[self.loss_function](logits, labels, mask=valid, **options)

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        """The loss of the full-resolution logits; with deep supervision (a tuple of
        logits, full resolution first), a weighted sum over the resolutions with
        weights 1/2^i normalised to 1, against nearest-downsampled labels."""
        labels, valid = self.labels(batch), batch["valid"]
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        weights = np.array([0.5**i for i in range(len(outputs))])
        weights = weights / weights.sum()
        per_example = 0.0
        for weight, logits in zip(weights, outputs):
            strides = [
                -(-full // low) for full, low in zip(labels.shape[1:], logits.shape[1:-1])
            ]
            downsampled = labels[(slice(None),) + tuple(slice(None, None, s) for s in strides)]
            per_example = per_example + weight * self._loss_per_example(logits, downsampled, valid)
        return losses.masked_mean(per_example, valid), {"loss": per_example}

    def host_outputs(self, logits: jnp.ndarray, batch: Batch) -> Batch:
        labels = self.labels(batch)
        predicted = jnp.argmax(logits, axis=-1).astype(jnp.uint8)
        outputs = {
            "prediction": predicted,
            "truth": labels.astype(jnp.uint8),
            "dice": metrics.dice_per_class(predicted, labels, self.num_classes),
            "iou": metrics.iou_per_class(predicted, labels, self.num_classes),
            "image": batch[self.image_key][..., 0],
        }
        if self.lesion_metrics:
            outputs["instances"] = batch[self.mask_key].astype(jnp.int32)
        return outputs

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        names = self.names
        result = {}
        for name in ("dice", "iou"):
            per_class = np.asarray(metrics.masked_nanmean(jnp.asarray(host_outputs[name])))
            result[name] = float(np.nanmean(per_class[1:])) if np.isfinite(per_class[1:]).any() else float("nan")
            for k in range(1, self.num_classes):
                result[f"{name}_{names[k]}"] = float(per_class[k])
        predicted, truth = host_outputs["prediction"], host_outputs["truth"]
        hd95, asd = [], []
        for k in range(1, self.num_classes):
            distances, missed, present = _surface_metrics(predicted == k, truth == k, self.spacing)
            result[f"hd95_{names[k]}"], result[f"asd_{names[k]}"] = distances
            result[f"missed_{names[k]}"] = missed / present if present else float("nan")
            hd95.append(distances[0])
            asd.append(distances[1])
        result["hd95"] = _nanmean(hd95)
        result["asd"] = _nanmean(asd)
        if predicted.ndim == 4:  # [N, X, Y, Z] volumes: consistency across slices
            per_class = []
            for k in range(1, self.num_classes):
                pairs = zip(predicted, truth)
                gaps = [slice_consistency(p == k, t == k) for p, t in pairs]
                per_class.append(_nanmean(gaps))
                result[f"slice_consistency_{names[k]}"] = per_class[-1]
            result["slice_consistency"] = _nanmean(per_class)
        if self.lesion_metrics:
            counts = [
                metrics.lesion_detection_counts(p > 0, t)
                for p, t in zip(predicted, host_outputs["instances"])
            ]
            result.update(metrics.lesion_detection(counts))
        return result

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """A few cases with the truth contoured in red and the prediction in
        yellow (volumes: the axial slice that shows the most truth classes)."""
        from medjax.viz.segmentation import draw_segmentations

        truth = host_outputs["truth"]
        foreground = truth.reshape(len(truth), -1).astype(bool).any(-1)
        # Cases with foreground first (in split order), then the rest.
        order = np.concatenate([np.flatnonzero(foreground), np.flatnonzero(~foreground)])
        chosen = order[: self.num_figure_cases]
        draw_segmentations(
            host_outputs["image"][chosen], truth[chosen], host_outputs["prediction"][chosen],
            path, dice=host_outputs["dice"][chosen], title=title,
        )


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _surface_metrics(predicted: np.ndarray, truth: np.ndarray, spacing):
    """Mean HD95 and ASD over cases where both masks hold the class; the number
    of cases where the truth holds it and the prediction misses it entirely; and
    the number of cases whose truth holds it."""
    hd95, asd, missed, present = [], [], 0, 0
    for p, t in zip(predicted, truth):
        if not t.any():
            continue
        present += 1
        if not p.any():
            missed += 1
            continue
        distances = metrics.surface_distances(p, t, spacing)  # once for both
        hd95.append(metrics.hausdorff_95_of_distances(*distances))
        asd.append(metrics.average_surface_distance_of_distances(*distances))
    return (_nanmean(hd95), _nanmean(asd)), missed, present
