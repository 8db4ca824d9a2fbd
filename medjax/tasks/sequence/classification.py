"""Classification of sequences: cine normal/abnormal motion, and slice stacks of
3D volumes (is there a lesion in the volume?) with the slices as the sequence."""

import dataclasses

import jax.numpy as jnp

from medjax.data import schema as roles
from medjax.tasks.base import Batch
from medjax.tasks.classification.task import ClassificationTask
from medjax.tasks.sequence.roles import check_time_axis


@dataclasses.dataclass(frozen=True)
class SequenceClassificationTask(ClassificationTask):
    """:class:`ClassificationTask` of a sequence ``[B, T, H, W, C]``: the same
    losses, split metrics (AUROC, accuracy, balanced accuracy, sensitivity and
    specificity) and figures (confusion matrix, ROC curves); the model sees the
    whole sequence.

    The image field must have a time axis (cine), unless ``slice_axis`` is set:
    then it is a 3D volume ``[B, *S, C]`` (no time axis) and ``prepare_batch``
    moves spatial axis ``slice_axis`` to the time axis, so a sequence model reads
    the volume slice by slice (``slice_axis=2`` on the torso phantoms: axial
    slices, caudal to cranial). Augmentation sees the moved image as a sequence
    of 2D slices: one in-plane transform for every slice of a volume.

    Attributes:
        slice_axis: null for data with a time axis; else the spatial axis
            (0-based, 0..2) of a 3D image that becomes the sequence.
    """

    slice_axis: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.input_role not in (None, roles.IMAGE):
            raise ValueError(
                "task.input_role: a sequence task reads an image, "
                f"got {self.input_role!r}"
            )
        if self.slice_axis is not None and self.slice_axis not in (0, 1, 2):
            raise ValueError(
                f"task.slice_axis: expected null or a spatial axis 0, 1 or 2 of a 3D "
                f"image, got {self.slice_axis!r}"
            )

    def configure(self, data, *, task_name: str = "", data_name: str = ""):
        """:meth:`ClassificationTask.configure`, and the image's time axis: present
        (cine), or absent with ``slice_axis`` (a volume)."""
        configured = super().configure(data, task_name=task_name, data_name=data_name)
        check_time_axis(
            self, data, self.image_key, time=self.slice_axis is None,
            task_name=task_name, data_name=data_name,
        )
        return configured

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """With ``slice_axis``: the volume ``[B, *S, C]`` as slices
        ``[B, S[slice_axis], *other S, C]``; else the batch as it is."""
        if self.slice_axis is None:
            return batch
        volume = batch[self.image_key]
        if volume.ndim != 5:
            raise ValueError(
                f"task.slice_axis={self.slice_axis}: expected a 3D image [B, *S, C], "
                f"got {self.image_key!r} of shape {volume.shape}"
            )
        return {**batch, self.image_key: jnp.moveaxis(volume, 1 + self.slice_axis, 1)}

    def batch_roles(self) -> roles.Schema:
        # The prepared slice stack is a sequence of 2D images for augmentation.
        if self.slice_axis is None:
            return self.field_roles()
        return tuple(
            (key, roles.image(time=True) if key == self.image_key else role)
            for key, role in self.field_roles()
        )
