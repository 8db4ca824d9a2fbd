"""What the sequence tasks check of the data's roles: an image field with (or,
for slice stacks, without) a time axis."""

from medjax.data import schema as roles
from medjax.tasks.base import TaskDataMismatch


def check_time_axis(
    task, data, image_key: str, *, time: bool, task_name: str = "", data_name: str = ""
) -> None:
    """Raises one line naming task, data and field unless ``data``'s
    ``image_key`` field has a time axis (``time``) or has none (not ``time``).

    Called after ``Task.configure``, which has checked the field is an image.

    Raises:
        TaskDataMismatch: the image field's time flag is not ``time``.
    """
    schema = tuple(dict(data.schema).items())
    role = dict(schema)[image_key]
    if role.time == time:
        return
    task = task_name or type(task).__name__
    name = data_name or getattr(data, "name", "") or "the data"
    if time:
        expected = "with a time axis (cine frames; a 3D volume needs task.slice_axis)"
    else:
        expected = "without a time axis (task.slice_axis moves a spatial axis to time)"
    raise TaskDataMismatch(
        f"task={task} needs an image field {image_key!r} {expected}; data={name} has "
        f"{role} {image_key!r} (its fields: {roles.describe(schema)})"
    )
