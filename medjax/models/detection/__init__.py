"""Detection models: ``centernet`` (a U-Net trunk with centre-heatmap, size and
offset heads) and Faster R-CNN (``faster_rcnn``, with ``rpn`` and ``box_head``)."""
