"""Detectors: Faster R-CNN (``faster_rcnn``, with ``rpn`` and ``box_head``)."""
