"""Pictures of data (``medjax-show``): a grid of samples with their label maps,
lesions, points and boxes, above the same samples after augmentation.

What is drawn is decided from the data's field roles (``medjax.data.schema``),
never from key names (:func:`layout`): the first image field is shown (the
middle slice of a volume; with a time axis, frames of the sequence tiled into
a montage), label maps as coloured contours, instance maps as red outlines, points
as cyan markers, boxes as rectangles, and scalar class labels and targets in
each panel's title.
"""

import dataclasses

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import medjax.viz  # the one backend setting, and save_figure
from medjax.data import schema as roles
from medjax.viz.segmentation import draw_label_contours

#: Frames of a sequence tiled into one panel, evenly spread over the sequence.
MAX_FRAMES = 4
#: Points of a volume within this many slices of the one shown are drawn.
_POINT_SLICES = 2


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one panel of a sample shows, by field.

    Attributes:
        image: the key of the image drawn in grey.
        sequence: the image has a time axis: frames are tiled into a montage.
        label_maps: keys drawn as coloured contours, one colour per label.
        instance_maps: keys drawn as red outlines of every instance.
        points: ``(points key, validity key)`` pairs drawn as markers.
        boxes: ``(boxes key, validity key)`` pairs drawn as rectangles.
        captions: keys of class labels and targets written in the title.
    """

    image: str
    sequence: bool = False
    label_maps: tuple[str, ...] = ()
    instance_maps: tuple[str, ...] = ()
    points: tuple[tuple[str, str], ...] = ()
    boxes: tuple[tuple[str, str], ...] = ()
    captions: tuple[str, ...] = ()


def layout(schema, keys=None) -> Layout:
    """What to draw for data with roles ``schema``, from the roles alone.

    Args:
        schema: ``{key: Role}`` or ``((key, Role), ...)``, in the data's order.
        keys: the fields a batch actually holds (default: all of ``schema``);
            fields it lacks are not drawn.

    Returns:
        The layout; its image is the first ``image`` field.

    Raises:
        ValueError: no image field to draw.
    """
    pairs = tuple(dict(schema).items())
    if keys is not None:
        pairs = _held(pairs, keys)
    images = [(key, role) for key, role in pairs if role.kind == roles.IMAGE]
    if not images:
        raise ValueError(
            f"show: the data has no image field to draw (its fields: "
            f"{roles.describe(pairs)})"
        )
    image, image_role = images[0]

    def kind(*kinds):
        return tuple(key for key, role in pairs if role.kind in kinds)

    return Layout(
        image=image,
        sequence=image_role.time,
        label_maps=kind(roles.LABEL_MAP),
        instance_maps=kind(roles.INSTANCE_MAP),
        points=tuple((k, r.valid) for k, r in pairs if r.kind == roles.POINTS),
        boxes=tuple((k, r.valid) for k, r in pairs if r.kind == roles.BOXES),
        captions=kind(roles.CLASS_LABEL, roles.TARGET),
    )


def augment_for_display(augment, key, batch: dict, schema) -> dict:
    """``batch`` after ``augment``, every spatial field moved with its image (a
    sequence's frames by one transform), by the roles in ``schema``."""
    return dict(augment(key, batch, _held(tuple(dict(schema).items()), batch)))


def _held(pairs, keys) -> tuple:
    """The ``(key, Role)`` pairs whose field (and validity field) ``keys`` holds."""
    keys = set(keys)
    return tuple(
        (key, role)
        for key, role in pairs
        if key in keys and (role.valid is None or role.valid in keys)
    )


def _frames(count: int) -> np.ndarray:
    """Indices of up to ``MAX_FRAMES`` frames spread evenly over ``count``."""
    return np.unique(
        np.linspace(0, count - 1, min(count, MAX_FRAMES)).round().astype(int)
    )


def _tile(frames: np.ndarray) -> np.ndarray:
    """Frames ``[N, H, W]`` tiled row by row into a near-square montage
    ``[rows * H, cols * W]`` (missing tiles are zeros), so a panel stays square."""
    count, height, width = frames.shape
    cols = int(np.ceil(np.sqrt(count)))
    rows = -(-count // cols)
    tiles = np.zeros((rows * cols, height, width), frames.dtype)
    tiles[:count] = frames
    tiles = tiles.reshape(rows, cols, height, width).transpose(0, 2, 1, 3)
    return tiles.reshape(rows * height, cols * width)


def _panel(plan: Layout, example: dict) -> tuple[np.ndarray, dict, int | None]:
    """The 2D picture of one example: ``(grey [H, W'], {key: 2D label map},
    slice shown or None)``; a sequence's frames are tiled into a montage, a volume
    shows its middle slice along the last spatial axis."""
    image = example[plan.image][..., 0]  # the first channel
    maps = {k: example[k] for k in plan.label_maps + plan.instance_maps}
    if plan.sequence:  # [T, *S]: chosen frames tiled
        chosen = _frames(image.shape[0])
        if image.ndim == 4:  # a sequence of volumes: the middle slice of each
            middle = image.shape[-1] // 2
            image = image[..., middle]
            maps = {k: m[..., middle] for k, m in maps.items()}
        image = _tile(image[chosen])
        maps = {k: _tile(m[chosen]) for k, m in maps.items()}
        return image, maps, None
    if image.ndim == 3:
        middle = image.shape[2] // 2
        return image[..., middle], {k: m[..., middle] for k, m in maps.items()}, middle
    return image, maps, None


def _draw(ax, plan: Layout, example: dict, *, title: str, window) -> None:
    grey, maps, middle = _panel(plan, example)
    ax.imshow(grey, cmap="gray", vmin=window[0], vmax=window[1])
    for key in plan.label_maps:
        draw_label_contours(ax, maps[key])
    for key in plan.instance_maps:
        outlines = maps[key] > 0
        if outlines.any():
            ax.contour(outlines, levels=[0.5], colors="red", linewidths=1.0)
    for key, valid_key in plan.points:
        points, valid = example[key], example[valid_key].astype(bool)
        if middle is not None:  # a volume: points near the slice shown
            valid = valid & (np.abs(points[:, 2] - middle) <= _POINT_SLICES)
        ax.scatter(points[valid, 1], points[valid, 0], s=10, c="cyan", marker="+")
    for key, valid_key in plan.boxes:
        ndim = example[key].shape[-1] // 2
        for box in example[key][example[valid_key].astype(bool)]:
            low, high = box[:ndim], box[ndim:]
            if middle is not None and not low[2] <= middle <= high[2]:
                continue
            ax.add_patch(
                Rectangle(
                    (low[1] - 0.5, low[0] - 0.5),
                    high[1] - low[1] + 1,
                    high[0] - low[0] + 1,
                    fill=False,
                    edgecolor="lime",
                    linewidth=0.8,
                )
            )
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _caption(plan: Layout, example: dict) -> str:
    """``"label 2, ejection_fraction 0.61"``: the example's scalar captions."""
    parts = []
    for key in plan.captions:
        value = np.asarray(example[key])
        if value.ndim:  # per-lesion lists and label vectors are left out
            continue
        integer = np.issubdtype(value.dtype, np.integer) or value.dtype == bool
        parts.append(f"{key} {int(value)}" if integer else f"{key} {float(value):.2f}")
    return ", ".join(parts)


def sample_grid(
    batch: dict, augmented: dict | None, path: str, title: str, schema
) -> None:
    """Writes a PNG: one column per example; the original row, then (if given)
    the augmented row, drawn as :func:`layout` decides from ``schema``. Both
    rows share the grey window of the original images."""
    batch = jax.device_get(batch)
    plan = layout(schema, batch)
    rows = [batch] + ([jax.device_get(augmented)] if augmented else [])
    count = len(batch[plan.image])
    images = np.asarray(batch[plan.image])
    window = (float(images.min()), float(images.max()))
    width = 2.1
    fig, axes = plt.subplots(
        len(rows), count, figsize=(width * count, 2.5 * len(rows)), squeeze=False
    )
    for row, examples in enumerate(rows):
        for i in range(count):
            example = {k: np.asarray(v[i]) for k, v in examples.items()}
            _draw(axes[row, i], plan, example, title=_caption(plan, example), window=window)
    if augmented:
        title += "\ntop: as stored; bottom: augmented"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    medjax.viz.save_figure(fig, path, dpi=110)
