"""Faster R-CNN (Ren et al. 2015) for 2D images, in Flax linen, with static
shapes: a ResNet backbone (``medjax.models.cnn.ConvBackbone``'s stage outputs),
an optional feature pyramid (Lin et al. 2017), a region proposal network over
anchors (``rpn``), proposals by top-k and fixed-k NMS, RoIAlign and a box head
for class and box refinement (``box_head``).

The model holds no loss: it returns what the task's loss reads (objectness
and deltas per anchor, the anchors, the proposals and the box head's outputs
on them) and, in inference, the final detections. In training it may be
given the truth boxes, ``(image, truth_boxes, truth_valid)``, and appends them
to the proposals, as torchvision does, so the box head sees positives from the
first step; in inference (or given an image alone) it ignores them, so
``medjax-predict`` runs it on an image.

Parameter groups: the backbone ``backbone`` (stem and stages, named as in
``CNNClassifier``, so a classifier's checkpoint transfers); everything else
(``fpn_*``, ``rpn``, ``box_head``) is head.
"""

import math
from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.cnn import ConvBackbone, backbone_stages
from medjax.models.detection import box_head as box_head_lib
from medjax.models.detection import rpn as rpn_lib
from medjax.models.groups import ParameterGroups, Transferable


def _upsample_to(x: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """Nearest 2x upsampling of ``[B, *F, C]``, cut to ``shape`` (an odd finer
    map is one cell shorter than twice the coarser one)."""
    for axis in range(1, x.ndim - 1):
        x = jnp.repeat(x, 2, axis=axis)
    return x[(slice(None),) + tuple(slice(0, n) for n in shape)]


class FeaturePyramid(nn.Module):
    """Top-down pathway with lateral 1x1 connections and 3x3 smoothing (FPN).

    Attributes:
        width: channels of every output level.
    """

    width: int = 32

    @nn.compact
    def __call__(self, levels: Sequence[jnp.ndarray]) -> tuple[jnp.ndarray, ...]:
        """Maps ``[B, *F_l, C_l]`` (finest first) to ``[B, *F_l, width]``."""
        dims = levels[0].ndim - 2
        lateral = [
            nn.Conv(self.width, (1,) * dims, name=f"lateral{i}")(x)
            for i, x in enumerate(levels)
        ]
        merged = [lateral[-1]]
        for x in reversed(lateral[:-1]):
            merged.insert(0, x + _upsample_to(merged[0], x.shape[1:-1]))
        return tuple(
            nn.Conv(self.width, (3,) * dims, name=f"output{i}")(x)
            for i, x in enumerate(merged)
        )


class FasterRCNN(nn.Module, Transferable):
    """Two-stage detector of 2D images ``[B, H, W, C]``.

    Attributes:
        num_classes: foreground classes ``C`` (the box head has ``C + 1`` logits).
        widths / blocks_per_stage / residual / norm / norm_momentum / stem /
            frozen_stages / activation / conv_impl: the ``ConvBackbone``'s.
        levels: backbone stages the detector reads, finest first; stage ``i``
            has stride ``2**i`` (``small`` stem) or ``4 * 2**i`` (``imagenet``).
        fpn_width: channels of a feature pyramid over ``levels``; None: no
            pyramid (then only one level).
        anchor_sizes: anchor sides in voxels, one tuple per level, each the
            same length.
        aspect_ratios: height / width of the anchors.
        rpn_width: channels of the RPN's 3x3 convolution.
        pre_nms_top_k / post_nms_top_k / rpn_iou_threshold / min_size: proposal
            selection (``rpn.propose``); ``post_nms_top_k`` proposals per image.
        roi_size: RoIAlign bins per axis.
        head_width: the box head's hidden width.
        class_agnostic: one set of box deltas for all classes.
        max_detections / detection_iou_threshold / score_threshold: the final
            detections (``box_head.detect``).
        spatial_dims: 2 (the box ops are 2D and 3D; the model is tested in 2D).
    """

    num_classes: int = 1
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = True
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    activation: str = "relu"
    conv_impl: str = "xla"
    levels: Sequence[int] = (2,)
    fpn_width: int | None = None
    anchor_sizes: Sequence[Sequence[float]] = ((4.0, 8.0, 16.0),)
    aspect_ratios: Sequence[float] = (1.0,)
    rpn_width: int = 64
    pre_nms_top_k: int = 256
    post_nms_top_k: int = 64
    rpn_iou_threshold: float = 0.7
    min_size: float = 1.0
    roi_size: int = 7
    head_width: int = 128
    class_agnostic: bool = False
    max_detections: int = 32
    detection_iou_threshold: float = 0.5
    score_threshold: float = 0.0
    spatial_dims: int = 2

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups(
            (backbone_stages(self.widths, self.blocks_per_stage, "backbone"),)
        )

    def with_frozen_statistics(self, num_stages: int) -> "FasterRCNN":
        return self.clone(frozen_stages=num_stages)

    @property
    def strides(self) -> tuple[int, ...]:
        """Image voxels per feature cell of each of ``levels``."""
        base = 1 if self.stem == "small" else 4
        return tuple(base * 2**level for level in self.levels)

    def _check(self) -> None:
        if self.spatial_dims != 2:
            raise ValueError(
                f"model.spatial_dims: FasterRCNN is 2D, got {self.spatial_dims}"
            )
        if len(self.anchor_sizes) != len(self.levels):
            raise ValueError(
                f"model.anchor_sizes: expected one tuple per level ({len(self.levels)}), "
                f"got {len(self.anchor_sizes)}"
            )
        if len({len(s) for s in self.anchor_sizes}) != 1:
            raise ValueError(
                f"model.anchor_sizes: every level needs as many sizes (the RPN head is "
                f"shared), got {[list(s) for s in self.anchor_sizes]}"
            )
        if len(self.levels) > 1 and self.fpn_width is None:
            raise ValueError("model.levels: more than one level needs model.fpn_width")
        if any(not 0 <= level < len(self.widths) for level in self.levels):
            raise ValueError(
                f"model.levels: expected stages 0..{len(self.widths) - 1}, got "
                f"{list(self.levels)}"
            )

    @nn.compact
    def __call__(self, inputs, *, train: bool) -> dict[str, jnp.ndarray]:
        """Detector outputs.

        Args:
            inputs: images ``[B, H, W, C]``, or ``(images, truth_boxes [B, G, 4],
                truth_valid [B, G])``; the truth joins the proposals in
                training only.
            train: batch statistics and truth proposals (True) or inference.

        Returns:
            A dict: ``anchors [B, N, 4]``, ``rpn_logits [B, N]``, ``rpn_deltas
            [B, N, 4]``, ``proposals [B, P, 4]``, ``proposal_scores [B, P]``,
            ``proposal_valid [B, P]``, ``rois [B, R, 4]`` and ``roi_valid [B, R]``
            (the proposals, then the truth in training: ``R = P + G``),
            ``roi_logits [B, R, C + 1]``, ``roi_deltas [B, R, C or 1, 4]``; in
            inference also ``boxes [B, K, 4]``, ``scores [B, K]``, ``labels [B, K]``
            and ``valid [B, K]`` (the detections, ``K = max_detections``).
        """
        self._check()
        truth = None
        if isinstance(inputs, (tuple, list)):
            images, *truth = inputs
        else:
            images = inputs
        image_shape = tuple(images.shape[1:-1])
        stages = ConvBackbone(
            widths=tuple(self.widths),
            blocks_per_stage=self.blocks_per_stage,
            residual=self.residual,
            spatial_dims=self.spatial_dims,
            norm=self.norm,
            norm_momentum=self.norm_momentum,
            stem=self.stem,
            frozen_stages=self.frozen_stages,
            activation=self.activation,
            conv_impl=self.conv_impl,
            feature_maps=True,
            name="backbone",
        )(images, train=train)
        levels = tuple(stages[level] for level in self.levels)
        if self.fpn_width is not None:
            levels = FeaturePyramid(self.fpn_width, name="fpn")(levels)
        sizes = tuple(tuple(float(s) for s in level) for level in self.anchor_sizes)
        num_anchors = len(sizes[0]) * len(self.aspect_ratios)
        logits, deltas = rpn_lib.RPNHead(
            num_anchors, self.rpn_width, self.spatial_dims, name="rpn"
        )(levels)
        anchors = rpn_lib.level_anchors(
            [x.shape[1:-1] for x in levels],
            self.strides,
            sizes,
            tuple(self.aspect_ratios),
        )
        batch = images.shape[0]
        # Proposals are not differentiated through (the 4-step training's
        # approximation, as torchvision's detach).
        propose = partial(
            rpn_lib.propose,
            image_shape=image_shape,
            pre_nms_top_k=self.pre_nms_top_k,
            post_nms_top_k=self.post_nms_top_k,
            iou_threshold=self.rpn_iou_threshold,
            min_size=self.min_size,
        )
        if self.is_initializing():
            # Only shapes matter to the parameters: skip the sequential NMS,
            # which dominates the cost of an (unjitted) init.
            proposals = jnp.zeros((batch, self.post_nms_top_k, 2 * self.spatial_dims))
            proposal_scores = jnp.zeros((batch, self.post_nms_top_k))
            proposal_valid = jnp.zeros((batch, self.post_nms_top_k), bool)
        else:
            proposals, proposal_scores, proposal_valid = jax.vmap(
                lambda l, d: propose(l, d, anchors)
            )(jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas))
        rois, roi_valid = proposals, proposal_valid
        if train and truth is not None:
            truth_boxes, truth_valid = truth
            rois = jnp.concatenate([rois, truth_boxes.astype(rois.dtype)], axis=1)
            roi_valid = jnp.concatenate([roi_valid, truth_valid.astype(bool)], axis=1)
        rois = jax.lax.stop_gradient(rois)
        level_sizes = [math.exp(sum(map(math.log, s)) / len(s)) for s in sizes]
        pooled = box_head_lib.pool_rois(
            levels,
            self.strides,
            rois,
            output_size=(self.roi_size,) * self.spatial_dims,
            level_sizes=level_sizes,
        )
        roi_logits, roi_deltas = box_head_lib.BoxHead(
            self.num_classes, self.head_width, self.class_agnostic, name="box_head"
        )(pooled)
        outputs = {
            "anchors": jnp.broadcast_to(anchors, (batch, *anchors.shape)),
            "rpn_logits": logits,
            "rpn_deltas": deltas,
            "proposals": proposals,
            "proposal_scores": proposal_scores,
            "proposal_valid": proposal_valid,
            "rois": rois,
            "roi_valid": roi_valid,
            "roi_logits": roi_logits,
            "roi_deltas": roi_deltas,
        }
        if not train and not self.is_initializing():
            detect = partial(
                box_head_lib.detect,
                image_shape=image_shape,
                max_detections=self.max_detections,
                iou_threshold=self.detection_iou_threshold,
                score_threshold=self.score_threshold,
                min_size=self.min_size,
            )
            boxes, scores, labels, valid = jax.vmap(detect)(
                roi_logits, roi_deltas, rois, roi_valid
            )
            outputs.update(boxes=boxes, scores=scores, labels=labels, valid=valid)
        return outputs


# Anchor sides 4-16 px for the phantom lesions (radii ~2-6 px at 64^2).
faster_rcnn_tiny = partial(
    FasterRCNN,
    widths=(4, 8, 8),
    blocks_per_stage=1,
    rpn_width=8,
    head_width=16,
    roi_size=3,
    pre_nms_top_k=64,
    post_nms_top_k=16,
    max_detections=8,
)
faster_rcnn_small = partial(
    FasterRCNN,
    widths=(16, 32, 64),
    blocks_per_stage=(1, 2, 2),
    rpn_width=64,
    head_width=128,
    roi_size=7,
    pre_nms_top_k=256,
    post_nms_top_k=64,
    max_detections=32,
)
# The same backbone with a two-level pyramid (strides 2 and 4).
faster_rcnn_small_fpn = partial(
    faster_rcnn_small,
    levels=(1, 2),
    fpn_width=32,
    anchor_sizes=((4.0, 6.0), (9.0, 14.0)),
)
