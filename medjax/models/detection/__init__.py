"""Detection models: ``centernet`` (a U-Net trunk with centre-heatmap, size and
offset heads)."""
