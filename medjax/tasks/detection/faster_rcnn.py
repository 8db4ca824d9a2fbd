"""Faster R-CNN training and evaluation (``task=faster_rcnn``) on the
``DetectionTask`` base: truth boxes from the augmented instance map, anchor
and proposal matching and balanced sampling inside the jitted step
(``rcnn_targets``), and the final detections as the base's candidates.

The loss is torchvision's: the RPN's objectness (binary cross-entropy) and box
(smooth L1) losses over ``rpn_samples`` anchors per image (at most
``rpn_positive_fraction`` positive: IoU >= 0.7, plus the best anchor of each
truth box; negative below 0.3), and the box head's softmax cross-entropy and
smooth-L1 losses over ``roi_samples`` RoIs (at most ``roi_positive_fraction``
positive: IoU >= 0.5), deltas weighted ``box_weights``. The sampling draws
from per-example keys that ``prepare_batch`` puts into the batch
(``SAMPLING_KEY``, a field with no role, so augmentation passes it through),
so a step's sample is a function of the step's key and a resumed run repeats.

With ``truth_proposals`` the model gets ``(image, truth boxes, validity)`` and
appends the truth to its proposals in training (torchvision does; the box head
sees positives from the first step); in evaluation and ``medjax-predict`` it
uses its own proposals only.

Classes: one ``lesion`` class by default; with ``class_key`` (the phantoms'
``lesion_types``, 1..``num_classes``, 0 = none) the box head learns the lesion
types. The base's metrics pool the classes (a candidate is a lesion
candidate whatever its class).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from medjax import losses
from medjax.data import schema as roles
from medjax.runtime import FLAT_THREEFRY, random_key
from medjax.tasks.base import Batch
from medjax.tasks.detection import rcnn_targets
from medjax.tasks.detection.task import DetectionTask

#: The batch field of per-example sampling keys (raw key data, ``[B, 2]`` uint32).
SAMPLING_KEY = "rcnn_sampling_key"


@dataclasses.dataclass(frozen=True)
class FasterRCNNTask(DetectionTask):
    """Two-stage detector training (module docstring).

    Attributes:
        num_classes: foreground classes of the box head.
        class_key: the lesions' classes ``[B, L]`` (1..``num_classes``); None:
            one class.
        truth_proposals: add the truth boxes to the proposals in training.
        rpn_positive_iou / rpn_negative_iou: anchor matching thresholds.
        rpn_samples / rpn_positive_fraction: anchors sampled per image.
        roi_positive_iou: IoU from which a RoI is foreground.
        roi_samples / roi_positive_fraction: RoIs sampled per image.
        box_weights: the box head's delta weights ``(centre, size)``.
    """

    num_classes: int = 1
    class_key: str | None = None
    truth_proposals: bool = True
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_samples: int = 256
    rpn_positive_fraction: float = 0.5
    roi_positive_iou: float = 0.5
    roi_samples: int = 64
    roi_positive_fraction: float = 0.25
    box_weights: tuple[float, ...] = (10.0, 5.0)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(
            self, "box_weights", tuple(float(w) for w in self.box_weights)
        )
        if self.num_classes < 1:
            raise ValueError(f"task.num_classes: expected >= 1, got {self.num_classes}")
        if self.class_key is None and self.num_classes != 1:
            raise ValueError(
                f"task.num_classes: {self.num_classes} classes need task.class_key "
                "(the lesions' class field); without it there is one class"
            )
        if not self.rpn_negative_iou <= self.rpn_positive_iou:
            raise ValueError(
                f"task.rpn_negative_iou ({self.rpn_negative_iou}) must not exceed "
                f"task.rpn_positive_iou ({self.rpn_positive_iou})"
            )
        for name in ("rpn_positive_fraction", "roi_positive_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(
                    f"task.{name}: expected 0 < value <= 1, got {getattr(self, name)}"
                )
        for name in ("rpn_samples", "roi_samples"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"task.{name}: expected >= 1, got {getattr(self, name)}"
                )

    def needs(self) -> dict[str, str]:
        fields = super().needs()
        if self.class_key is not None:
            fields[self.class_key] = roles.CLASS_LABEL
        return fields

    # -- inside the jitted steps -----------------------------------------------------

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """The batch with one sampling key per example (``SAMPLING_KEY``)."""
        count = batch[self.image_key].shape[0]
        keys = jax.random.key_data(jax.random.split(key, count))
        return {**batch, SAMPLING_KEY: keys}

    def inputs(self, batch: Batch) -> Any:
        """``(image, truth boxes, truth validity)`` with ``truth_proposals``
        when the batch holds lesions; the image alone otherwise (a file given
        to ``medjax-predict``)."""
        image = batch[self.image_key]
        if not self.truth_proposals or self.centers_key not in batch:
            return image
        truth = self.truth(batch)
        return image, truth["boxes"], truth["valid"]

    def truth_labels(self, batch: Batch, valid: jnp.ndarray) -> jnp.ndarray:
        """``[B, L]`` foreground classes 0..C-1 of the lesions (0 where invalid)."""
        if self.class_key is None:
            return jnp.zeros(valid.shape, jnp.int32)
        labels = batch[self.class_key].astype(jnp.int32) - 1
        return jnp.where(valid, jnp.clip(labels, 0, self.num_classes - 1), 0)

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        truth = self.truth(batch)
        labels = self.truth_labels(batch, truth["valid"])
        count = batch[self.image_key].shape[0]
        if SAMPLING_KEY in batch:
            keys = jax.random.wrap_key_data(batch[SAMPLING_KEY], impl=FLAT_THREEFRY)
        else:
            keys = jax.random.split(random_key(0), count)
        rpn_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        roi_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        objectness, rpn_box = jax.vmap(
            lambda *a: rcnn_targets.rpn_loss(
                *a,
                positive_iou=self.rpn_positive_iou,
                negative_iou=self.rpn_negative_iou,
                num_samples=self.rpn_samples,
                positive_fraction=self.rpn_positive_fraction,
            )
        )(
            rpn_keys,
            outputs["rpn_logits"],
            outputs["rpn_deltas"],
            outputs["anchors"],
            truth["boxes"],
            truth["valid"],
        )
        classification, roi_box, accuracy = jax.vmap(
            lambda *a: rcnn_targets.box_head_loss(
                *a,
                positive_iou=self.roi_positive_iou,
                num_samples=self.roi_samples,
                positive_fraction=self.roi_positive_fraction,
                weights=self.box_weights,
            )
        )(
            roi_keys,
            outputs["roi_logits"],
            outputs["roi_deltas"],
            outputs["rois"],
            outputs["roi_valid"],
            truth["boxes"],
            labels,
            truth["valid"],
        )
        valid = batch["valid"]
        total = objectness + rpn_box + classification + roi_box
        per_example = {
            "loss": total,
            "rpn_objectness": objectness,
            "rpn_box": rpn_box,
            "roi_classification": classification,
            "roi_box": roi_box,
            "roi_accuracy": accuracy,
            "proposal_recall": self._proposal_recall(outputs, truth),
        }
        per_example = {k: jnp.where(valid, v, 0.0) for k, v in per_example.items()}
        return losses.masked_mean(total, valid), per_example

    @staticmethod
    def _proposal_recall(outputs, truth) -> jnp.ndarray:
        """``[B]`` share of each image's lesions with a proposal of IoU >= 0.5
        (1 for an image without lesions, which no proposal can miss)."""
        from medjax.ops import boxes as box_ops

        overlap = jax.vmap(box_ops.iou)(outputs["proposals"], truth["boxes"])
        overlap = jnp.where(outputs["proposal_valid"][..., None], overlap, 0.0)
        found = (overlap.max(axis=1) >= 0.5) & truth["valid"]
        lesions = truth["valid"].sum(-1)
        return jnp.where(lesions > 0, found.sum(-1) / jnp.maximum(lesions, 1), 1.0)

    def candidates(self, outputs: Any) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """The model's final detections (class-aware NMS, ``K`` of them)."""
        return outputs["boxes"], outputs["scores"], outputs["valid"]
