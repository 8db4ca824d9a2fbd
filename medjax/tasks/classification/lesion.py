"""Lesion-level classification: views around a candidate point, one stream each.

The model does not see the whole image: inside the jitted step the task cuts the
views named by ``views`` around ``batch[center_key]`` (``medjax.ops.views``):

- ``local``: a ``patch_size`` patch (a cube in 3D) at full resolution;
- ``context``: the ``patch_size * context_scale`` region around the same point,
  averaged down to ``patch_size`` (the downscaled global view);
- ``axial``, ``coronal``, ``sagittal``: 2D patches through a 3D point (2.5D).

One view goes to a single-stream model (``CNNClassifier``) as an array, several
go to a ``MultistreamCNN`` as a tuple. Because augmentation runs before the views
are cut, the candidate point is augmented with the image (rotation moves it).
"""

import dataclasses

from medjax.data import schema as roles
from medjax.ops import views as view_ops
from medjax.tasks.base import Batch
from medjax.tasks.classification.task import ClassificationTask


@dataclasses.dataclass(frozen=True)
class LesionClassificationTask(ClassificationTask):
    """:class:`ClassificationTask` of the views around ``center_key``.

    Attributes (besides those of ClassificationTask):
        center_key: candidate points ``[B, 1, ndim]`` (voxel coordinates), a
            ``points`` field: augmentation moves them with the image, and reads
            their validity flags (all True) with them.
        views: names of the views, in the order of the model's streams.
        patch_size: side of every view, in voxels.
        context_scale: how much larger (and coarser) the ``context`` view is.
    """

    label_key: str = "lesion_label"
    center_key: str = "lesion_center"
    views: tuple[str, ...] = ("local",)
    patch_size: int = 16
    context_scale: int = 4

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "views", tuple(self.views))
        if not self.views:
            raise ValueError("task.views: expected at least one view name")
        unknown = [v for v in self.views if v not in view_ops.VIEW_NAMES]
        if unknown:
            raise ValueError(
                f"task.views: unknown {unknown}; expected names from {view_ops.VIEW_NAMES}"
            )
        if self.patch_size < 1 or self.context_scale < 1:
            raise ValueError(
                f"task.patch_size and task.context_scale: expected >= 1, got "
                f"{self.patch_size} and {self.context_scale}"
            )

    def needs(self) -> dict[str, str]:
        return {**super().needs(), self.center_key: roles.POINTS}

    def inputs(self, batch: Batch):
        centers = batch[self.center_key][:, 0]
        views = view_ops.make_views(
            self.views, batch[self.image_key], centers,
            patch_size=self.patch_size, context_scale=self.context_scale,
        )
        return views[0] if len(views) == 1 else tuple(views)
