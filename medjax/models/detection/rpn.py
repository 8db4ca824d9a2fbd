"""Region proposal network (Ren et al. 2015): an objectness logit and box
deltas per anchor, and proposals decoded from them with a fixed number of
outputs, so every shape stays static under jit.

Boxes follow ``medjax.ops.boxes`` (inclusive voxel indices ``(min..., max...)``);
deltas and anchors follow ``medjax.ops.detection``.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.ops import boxes as boxes_lib
from medjax.ops import detection

# torchvision initialises the RPN's convolutions with N(0, 0.01): small logits
# and deltas at the start, so the first proposals are the anchors themselves.
_HEAD_INIT = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
    """A 3x3 convolution and ReLU shared by all levels, then 1x1 convolutions
    for ``A`` objectness logits and ``A * 2 * ndim`` deltas per location.

    Attributes:
        num_anchors: ``A``, anchors per location (the same on every level).
        width: channels of the shared 3x3 convolution.
        spatial_dims: 2 or 3.
    """

    num_anchors: int
    width: int = 64
    spatial_dims: int = 2

    @nn.compact
    def __call__(self, levels: Sequence[jnp.ndarray]):
        """Maps feature maps ``[B, *F_l, C]`` to ``(logits [B, N], deltas
        [B, N, 2 * ndim])``, ``N = sum_l prod(F_l) * A``, in
        ``ops.detection.grid_anchors``' order, level after level."""
        dims = self.spatial_dims
        # Created once and called on every level: the levels share weights.
        conv = nn.Conv(self.width, (3,) * dims, kernel_init=_HEAD_INIT, name="conv")
        score = nn.Conv(
            self.num_anchors, (1,) * dims, kernel_init=_HEAD_INIT, name="objectness"
        )
        regress = nn.Conv(
            self.num_anchors * 2 * dims,
            (1,) * dims,
            kernel_init=_HEAD_INIT,
            name="deltas",
        )
        logits, deltas = [], []
        for features in levels:
            hidden = nn.relu(conv(features))
            batch = features.shape[0]
            logits.append(score(hidden).reshape(batch, -1))
            deltas.append(regress(hidden).reshape(batch, -1, 2 * dims))
        return jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1)


def level_anchors(
    feature_shapes: Sequence[tuple[int, ...]],
    strides: Sequence[int],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
) -> jnp.ndarray:
    """The anchors of every level, concatenated: ``[N, 2 * ndim]`` in the
    order of :class:`RPNHead`'s outputs."""
    return jnp.concatenate(
        [
            detection.grid_anchors(shape, stride, level_sizes, aspect_ratios)
            for shape, stride, level_sizes in zip(feature_shapes, strides, sizes)
        ]
    )


def propose(
    logits: jnp.ndarray,
    deltas: jnp.ndarray,
    anchors: jnp.ndarray,
    image_shape: tuple[int, ...],
    *,
    pre_nms_top_k: int,
    post_nms_top_k: int,
    iou_threshold: float = 0.7,
    min_size: float = 1.0,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Proposals of one image: the ``pre_nms_top_k`` best-scoring anchors,
    decoded, clipped to the image, boxes smaller than ``min_size`` voxels on
    an axis dropped, then NMS down to ``post_nms_top_k`` (torchvision's
    ``RegionProposalNetwork.filter_proposals``, but one top-k and one NMS over
    all levels together). vmap over a batch.

    Args:
        logits: ``[N]`` objectness logits.
        deltas: ``[N, 2 * ndim]`` (weights ``(1, 1)``).
        anchors: ``[N, 2 * ndim]``.
        image_shape: spatial shape of the image (static).
        pre_nms_top_k: anchors kept before NMS (static; cut to ``N``).
        post_nms_top_k: ``K``, proposals returned (static).
        iou_threshold: of the NMS.
        min_size: the smallest box side kept, in voxels.

    Returns:
        ``(boxes [K, 2 * ndim], scores [K], valid [K] bool)``: by descending
        objectness (``scores`` are sigmoid probabilities); rows past the
        proposals found are zero and invalid.
    """
    top = min(pre_nms_top_k, logits.shape[0])
    best_logits, order = jax.lax.top_k(logits, top)
    boxes = detection.decode_boxes(deltas[order], anchors[order])
    boxes, overlaps = boxes_lib.clip_to_image(boxes, tuple(image_shape))
    big_enough = jnp.all(boxes_lib.box_size(boxes) >= min_size, axis=-1)
    valid = overlaps & big_enough & jnp.all(jnp.isfinite(boxes), axis=-1)
    indices, kept = detection.nms(
        boxes,
        best_logits,
        iou_threshold=iou_threshold,
        max_output=post_nms_top_k,
        valid=valid,
    )
    boxes = jnp.where(kept[:, None], boxes[indices], 0.0)
    scores = jnp.where(kept, jax.nn.sigmoid(best_logits[indices]), 0.0)
    return boxes, scores, kept
