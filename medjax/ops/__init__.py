"""Pure JAX operations, no medjax import above them: ``spatial`` (sampling,
affine matrices, points), ``displacement`` (dense warps), ``crops``,
``filters``, ``views``, ``boxes`` (corners, moving, clipping, sizes, IoU, boxes
of instance maps), ``detection`` (box deltas, anchors, fixed-k NMS) and
``roi_align``, ``heatmaps`` (Gaussian heatmaps of points, sub-voxel decoding,
max-pool peak finding).

The detection names are re-exported here: ``ops.nms(...)``, ``ops.iou(...)``;
the other modules are used as modules (``from medjax.ops import spatial``).
"""

from medjax.ops.boxes import box_size, box_volume, boxes_from_instances, iou
from medjax.ops.detection import (
    DEFAULT_SIZE_CLIP,
    anchors_per_location,
    batched_nms,
    decode_boxes,
    encode_boxes,
    grid_anchors,
    nms,
)
from medjax.ops.roi_align import roi_align

__all__ = [
    "DEFAULT_SIZE_CLIP",
    "anchors_per_location",
    "batched_nms",
    "box_size",
    "box_volume",
    "boxes_from_instances",
    "decode_boxes",
    "encode_boxes",
    "grid_anchors",
    "iou",
    "nms",
    "roi_align",
]
