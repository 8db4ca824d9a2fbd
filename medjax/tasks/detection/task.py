"""The base of every learned lesion detector: truth from the data's fields by
role, candidates scored by LUNA16's FROC and COCO's AP, figures, and what
``medjax-predict`` writes.

**Truth.** A lesion is a row of the data's ``points`` field (``centers_key``,
its validity flags) with its radius (``radii_key``, voxels) and, for boxes,
either

- ``box_source="instances"``: the extent of its id in the ``instance_map``
  field (``instance_key``; id ``k`` is row ``k - 1``), taken inside the jitted
  step *after* augmentation with ``ops.boxes_from_instances``. A rotated lesion
  keeps a tight box this way, where a box moved through its corners grows;
- ``box_source="boxes"``: a native ``boxes`` field of the data (``boxes_key``),
  moved through its corners by augmentation.

``"auto"`` (the default) chooses in ``configure`` by role: the instance map
when the data has one under ``instance_key``, else its one ``boxes`` field.
Augmentation moves the centres with the image (a centre moved out of it, or a
lesion whose voxels all left, becomes invalid); radii are not rescaled, so
zoom augmentation leaves them approximate.

**Candidates.** A subclass implements one hook, ``candidates(outputs) ->
(boxes [B, K, 2 * ndim], scores [B, K], valid [B, K])``, jit-able, with
``K = max_detections`` static; ``candidate_points`` gives the candidates'
points ``[B, K, ndim]``, by default the boxes' centres (a subclass that finds
peaks first may return its peaks). Boxes follow ``medjax.ops.boxes``
(inclusive voxel indices, ``(min..., max...)``).

**Metrics over a split** (``medjax.metrics.detection``), scans being the
split's examples (2D slices or 3D volumes):

- ``cpm``: LUNA16's competition performance metric, the mean sensitivity at
  1/8 .. 8 false positives per scan; ``froc_1_8``, ``froc_1_4``, ``froc_1_2``,
  ``froc_1``, ``froc_2``, ``froc_4``, ``froc_8`` the sensitivities. A candidate
  hits a lesion within its radius of the centre or, with ``hit_on_mask``, on a
  voxel of its instance mask (as the CAD baseline is scored);
- ``ap50`` and ``ap`` (COCO's mean over IoU 0.5:0.95) of the boxes;
- ``sensitivity_r<lo>_<hi>``: sensitivity by lesion radius (voxels, bins
  ``size_bins``) at the 1 FP/scan operating point;
- ``localisation_error``: mean distance from a detected lesion's centre to its
  best hitting candidate at that operating point, in mm with ``spacing``
  (voxels without).

**Figures** at each evaluation: ``draw_cases`` draws a few cases with the
truth boxes (red) and the candidates above ``draw_threshold`` coloured by
score, and the split's FROC curve beside them (``<figure>_froc.png``).

**medjax-predict**: ``prediction_role()`` is ``points`` and ``decode`` returns,
for one example, ``{"points", "scores", "valid", "boxes"}``.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medjax.data import schema as roles
from medjax.metrics import detection as det_metrics
from medjax.ops import boxes as box_ops
from medjax.tasks.base import Batch, Task, TaskDataMismatch

BOX_SOURCES = ("auto", "instances", "boxes")
#: Metric names of LUNA16's false-positive rates.
FROC_NAMES = (
    "froc_1_8",
    "froc_1_4",
    "froc_1_2",
    "froc_1",
    "froc_2",
    "froc_4",
    "froc_8",
)


@dataclasses.dataclass(frozen=True)
class DetectionTask(Task):
    """What every lesion detector shares (module docstring); subclasses add the
    loss and ``candidates``.

    Attributes:
        image_key: the ``image`` field ``[B, *S, C]``.
        instance_key: the ``instance_map`` field ``[B, *S]`` (lesion ids).
        centers_key: the lesions' ``points`` field ``[B, L, ndim]``; its
            validity key comes from its role.
        radii_key: the lesions' radii ``[B, L]``, voxels.
        boxes_key: a native ``boxes`` field (``box_source="boxes"``); None: the
            data's one boxes field, found in ``configure``.
        box_source: ``auto``, ``instances`` or ``boxes`` (module docstring).
        max_detections: ``K``, the candidates per example (static).
        nms_iou_threshold: overlap above which a lower-scoring box is
            suppressed, for subclasses that run NMS.
        min_score: candidates at or below this score are invalid.
        hit_on_mask: a candidate on a lesion's voxel hits it too (and the
            instance map goes to the host).
        size_bins: lesion-radius bin edges, voxels, for the sensitivity by size.
        spacing: voxel size (mm) for ``localisation_error`` (None: the data's,
            filled by ``configure``).
        draw_threshold: the figures show candidates above this score.
        num_figure_cases: cases drawn at each evaluation.
    """

    image_key: str = "image"
    instance_key: str = "lesion_mask"
    centers_key: str = "lesion_centers"
    radii_key: str = "lesion_radii"
    boxes_key: str | None = None
    box_source: str = "auto"
    max_detections: int = 32
    nms_iou_threshold: float = 0.5
    min_score: float = 0.0
    hit_on_mask: bool = True
    size_bins: tuple[float, ...] = (0.0, 2.0, 3.0, 4.0, float("inf"))
    spacing: tuple[float, ...] | None = None
    draw_threshold: float = 0.3
    num_figure_cases: int = 4

    primary_metric = "cpm"

    def __post_init__(self):
        for name in ("size_bins", "spacing"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.box_source not in BOX_SOURCES:
            raise ValueError(
                f"task.box_source: expected one of {BOX_SOURCES}, got {self.box_source!r}"
            )
        if self.max_detections < 1:
            raise ValueError(
                f"task.max_detections: expected >= 1, got {self.max_detections}"
            )
        if len(self.size_bins) < 2 or any(
            b <= a for a, b in zip(self.size_bins, self.size_bins[1:])
        ):
            raise ValueError(
                f"task.size_bins: expected increasing edges, got {self.size_bins}"
            )

    # -- what the task reads ---------------------------------------------------------

    def needs(self) -> dict[str, str]:
        fields = {
            self.image_key: roles.IMAGE,
            self.centers_key: roles.POINTS,
            self.radii_key: roles.TARGET,
        }
        if self.box_source == "boxes":
            fields[self.boxes_key or "boxes"] = roles.BOXES
        else:  # auto (before configure) and instances
            fields[self.instance_key] = roles.INSTANCE_MAP
        return fields

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> "Task":
        """Chooses the box source by role (module docstring), checks the data's
        roles (one line naming task and data otherwise) and fills ``spacing``."""
        task = self
        schema = dict(data.schema)
        if self.box_source == "auto":
            native = [k for k, r in schema.items() if r.kind == roles.BOXES]
            instance = schema.get(self.instance_key)
            if instance is not None and instance.kind == roles.INSTANCE_MAP:
                task = dataclasses.replace(task, box_source="instances")
            elif self.boxes_key in schema or len(native) == 1:
                key = self.boxes_key if self.boxes_key in schema else native[0]
                task = dataclasses.replace(task, box_source="boxes", boxes_key=key)
            else:
                name = task_name or type(self).__name__
                data_label = data_name or getattr(data, "name", "") or "the data"
                raise TaskDataMismatch(
                    f"task={name} needs lesions: an instance_map field "
                    f"{self.instance_key!r} or a boxes field, with points "
                    f"{self.centers_key!r} and radii {self.radii_key!r}; "
                    f"data={data_label} has {roles.describe(tuple(schema.items()))}"
                )
        elif self.box_source == "boxes" and self.boxes_key is None:
            native = [k for k, r in schema.items() if r.kind == roles.BOXES]
            task = dataclasses.replace(task, boxes_key=native[0] if native else "boxes")
        task = Task.configure(task, data, task_name=task_name, data_name=data_name)
        if task.spacing is None and data.spacing is not None:
            task = dataclasses.replace(task, spacing=tuple(data.spacing))
        return task

    @property
    def lesion_valid_key(self) -> str:
        role = dict(self.field_roles()).get(self.centers_key)
        return role.valid if role is not None and role.valid else "lesion_valid"

    @property
    def batch_keys(self) -> tuple[str, ...]:
        keys = list(super().batch_keys)
        if self.lesion_valid_key not in keys:
            keys.append(self.lesion_valid_key)
        return tuple(keys)

    @property
    def uses_mask(self) -> bool:
        """Whether hits are judged on the instance map too (not with native
        boxes, where the data may have none)."""
        return self.hit_on_mask and self.box_source != "boxes"

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    # -- inside the jitted steps -----------------------------------------------------

    def truth(self, batch: Batch) -> dict[str, jnp.ndarray]:
        """The lesions of a (prepared, augmented) batch.

        Returns:
            ``centers [B, L, ndim]``, ``radii [B, L]``, ``boxes [B, L, 2 * ndim]``
            (float32) and ``valid [B, L]`` (bool): a lesion is valid when its
            centre is and, with instance boxes, some voxel of it is in the image.
        """
        centers = batch[self.centers_key].astype(jnp.float32)
        valid = batch[self.lesion_valid_key].astype(bool)
        count = centers.shape[1]
        if self.box_source == "boxes":
            boxes = batch[self.boxes_key].astype(jnp.float32)
            box_role = dict(self.field_roles())[self.boxes_key]
            valid = valid & batch[box_role.valid].astype(bool)
        else:
            boxes, present = jax.vmap(lambda m: box_ops.boxes_from_instances(m, count))(
                batch[self.instance_key]
            )
            valid = valid & present
        return {
            "centers": centers,
            "radii": batch[self.radii_key].astype(jnp.float32),
            "boxes": boxes,
            "valid": valid,
        }

    def candidates(self, outputs: Any) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """``(boxes [B, K, 2 * ndim], scores [B, K], valid [B, K])`` from the
        model's (``predict``'s) outputs; jit-able, by descending score."""
        raise NotImplementedError(f"{type(self).__name__}.candidates")

    def candidate_points(self, outputs: Any, boxes: jnp.ndarray) -> jnp.ndarray:
        """``[B, K, ndim]`` the candidates' points: the centres of their boxes
        (a subclass may return its peaks)."""
        ndim = boxes.shape[-1] // 2
        return 0.5 * (boxes[..., :ndim] + boxes[..., ndim:])

    def detections(self, outputs: Any) -> dict[str, jnp.ndarray]:
        """Candidates with their points, invalid below ``min_score``."""
        boxes, scores, valid = self.candidates(outputs)
        points = self.candidate_points(outputs, boxes)
        valid = valid & (scores > self.min_score)
        return {"boxes": boxes, "points": points, "scores": scores, "valid": valid}

    def host_outputs(self, outputs: Any, batch: Batch) -> Batch:
        found = self.detections(outputs)
        truth = self.truth(batch)
        result = {f"pred_{k}": v for k, v in found.items()}
        result.update({f"true_{k}": v for k, v in truth.items()})
        image = batch[self.image_key][..., 0]
        result["image"] = image
        if self.uses_mask:
            result["instances"] = batch[self.instance_key].astype(jnp.int16)
        return result

    # -- on the host -----------------------------------------------------------------

    def matches(self, host_outputs: dict[str, np.ndarray]) -> list:
        """One ``ScanMatch`` per example (padding rows dropped)."""
        out = host_outputs
        found = []
        for i in range(len(out["pred_scores"])):
            keep, lesions = out["pred_valid"][i], out["true_valid"][i]
            instance_map = out["instances"][i] if self.uses_mask else None
            found.append(
                det_metrics.match_candidates(
                    out["pred_points"][i][keep],
                    out["pred_scores"][i][keep],
                    out["true_centers"][i][lesions],
                    out["true_radii"][i][lesions],
                    instance_map=instance_map,
                    lesion_ids=np.flatnonzero(lesions) + 1,
                )
            )
        return found

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        out = host_outputs
        matches = self.matches(out)
        result = {"num_lesions": float(sum(len(m.lesion_scores) for m in matches))}
        curve = det_metrics.froc(matches)
        result["cpm"] = curve["cpm"]
        result.update(zip(FROC_NAMES, map(float, curve["sensitivities"])))
        keep, lesions = out["pred_valid"], out["true_valid"]
        ap = det_metrics.box_average_precision(
            [b[k] for b, k in zip(out["pred_boxes"], keep)],
            [s[k] for s, k in zip(out["pred_scores"], keep)],
            [b[v] for b, v in zip(out["true_boxes"], lesions)],
            max_detections=self.max_detections,
        )
        result["ap50"], result["ap"] = ap["ap50"], ap["map"]
        threshold = det_metrics.score_threshold_at_fp_rate(matches, 1.0)
        by_size = det_metrics.sensitivity_by_size(
            matches, self.size_bins, threshold=threshold
        )
        for low, high, value in zip(
            self.size_bins, self.size_bins[1:], by_size["sensitivity"]
        ):
            result[f"sensitivity_r{_edge(low)}_{_edge(high)}"] = float(value)
        result["localisation_error"] = self._localisation_error(out, matches, threshold)
        return result

    def _localisation_error(self, out, matches, threshold: float) -> float:
        """Mean distance (mm with ``spacing``) from each lesion detected at
        ``threshold`` to its highest-scoring hitting candidate."""
        scale = np.ones(1) if self.spacing is None else np.asarray(self.spacing)
        distances = []
        for i, match in enumerate(matches):
            detected = np.flatnonzero(match.lesion_scores >= threshold)
            if not len(detected):
                continue
            keep = out["pred_valid"][i]
            points, scores = out["pred_points"][i][keep], out["pred_scores"][i][keep]
            centers = out["true_centers"][i][out["true_valid"][i]]
            for lesion in detected:
                # The candidate carrying the lesion's score (the best hitting it).
                best = np.flatnonzero(scores == match.lesion_scores[lesion])
                offsets = (points[best] - centers[lesion]) * scale
                distances.append(np.sqrt((offsets**2).sum(-1)).min())
        return float(np.mean(distances)) if distances else float("nan")

    def draw_cases(
        self, host_outputs: dict[str, np.ndarray], path: str, title: str = ""
    ) -> None:
        """A few cases (those with lesions first) with truth and candidates, and
        the split's FROC curve at ``<path stem>_froc.png``."""
        from medjax.viz import detection as figures  # matplotlib only when drawing

        out = host_outputs
        has_lesion = out["true_valid"].any(-1)
        order = np.concatenate(
            [np.flatnonzero(has_lesion), np.flatnonzero(~has_lesion)]
        )
        chosen = order[: self.num_figure_cases]
        figures.draw_detections(
            out["image"][chosen],
            [
                b[v]
                for b, v in zip(out["true_boxes"][chosen], out["true_valid"][chosen])
            ],
            [
                b[v]
                for b, v in zip(out["pred_boxes"][chosen], out["pred_valid"][chosen])
            ],
            [
                s[v]
                for s, v in zip(out["pred_scores"][chosen], out["pred_valid"][chosen])
            ],
            path,
            points=[
                p[v]
                for p, v in zip(out["pred_points"][chosen], out["pred_valid"][chosen])
            ],
            threshold=self.draw_threshold,
            title=title,
        )
        curve = det_metrics.froc(self.matches(out))
        stem = os.path.splitext(path)[0]
        figures.plot_froc({type(self).__name__: curve}, stem + "_froc.png", title)

    # -- medjax-predict --------------------------------------------------------------

    def prediction_role(self) -> str | None:
        return roles.POINTS

    def decode(self, outputs: Any) -> dict[str, jnp.ndarray]:
        """For ONE example (``outputs`` of a batch of one):
        ``{"points": [K, ndim], "scores": [K], "valid": [K] bool,
        "boxes": [K, 2 * ndim]}`` in voxel coordinates of the model's input."""
        found = self.detections(outputs)
        return {k: found[k][0] for k in ("points", "scores", "valid", "boxes")}


def _edge(value: float) -> str:
    """A bin edge in a metric name: ``2``, ``2p5``, ``inf``."""
    if not np.isfinite(value):
        return "inf"
    return f"{value:g}".replace(".", "p")
