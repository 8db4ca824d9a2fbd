"""Views of an image around a point, for multistream (multi-view) networks.

A view is a small fixed-size array cut out around a point of interest: the local
patch at full resolution, a downscaled "context" view of a larger region, or the
three orthogonal 2D planes through a point of a volume (the 2.5D input of
Setio et al. 2016 and Roth et al. 2014). Each view feeds one stream of
:class:`medjax.models.multistream.MultistreamCNN`.

Conventions: one example is ``image [*spatial, C]`` (2D ``[H, W, C]``, 3D
``[H, W, D, C]``; the axes are rows, columns, slices) and a point is ``center
[ndim]``, float voxel coordinates in the same axis order. A patch of ``size``
voxels around ``center`` starts at ``round(center) - size // 2`` on every axis
(rounding halves to even, like numpy), so for odd sizes the rounded centre is
the middle voxel and for even sizes it is the one just after the middle. Parts
of a view outside the image hold ``pad_value``.

Everything is pure JAX with static shapes (sizes are Python ints), so it runs
inside jit and under vmap; :func:`make_views` does a whole batch.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

VIEW_NAMES = ("local", "context", "axial", "coronal", "sagittal")
PLANE_VIEWS = ("axial", "coronal", "sagittal")


def _static_size(size: int | Sequence[int], ndim: int, what: str) -> tuple[int, ...]:
    """``size`` as ``ndim`` positive Python ints (an int is used on every axis)."""
    if isinstance(size, int):
        size = (size,) * ndim
    size = tuple(size)
    if len(size) != ndim or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{what}: expected {ndim} positive ints, got {size}")
    return size


def _check_center(center: jnp.ndarray, ndim: int) -> None:
    if jnp.shape(center) != (ndim,):
        raise ValueError(
            f"center: expected shape ({ndim},) for an image with {ndim} spatial "
            f"axes, got {jnp.shape(center)}"
        )


def extract_patch(
    image: jnp.ndarray,
    center: jnp.ndarray,
    size: int | Sequence[int],
    pad_value: float = 0.0,
) -> jnp.ndarray:
    """The patch of ``image`` around ``center``, padded where it leaves the image.

    Element ``i`` of the patch is ``image[round(center) - size // 2 + i]`` (per
    axis), or ``pad_value`` where that index is outside the image; any centre
    works, even one far outside (the patch is then all padding).

    The image is not padded as a whole: a window of at most ``size`` voxels is cut
    with ``lax.dynamic_slice`` (clamped inside the image) and then re-indexed along
    each axis with the patch's own offsets, so memory stays of the order of the
    patch even for a large volume and a large context region.

    Args:
        image: ``[*spatial, C]`` one example.
        center: ``[ndim]`` float (or int) voxel coordinates.
        size: the patch extent, one int per spatial axis or one for all (static).
        pad_value: value of the voxels outside the image.

    Returns:
        ``[*size, C]`` with the dtype of ``image``.
    """
    ndim = image.ndim - 1
    size = _static_size(size, ndim, "size")
    _check_center(center, ndim)
    spatial = image.shape[:ndim]
    corner = jnp.round(jnp.asarray(center, jnp.float32)).astype(jnp.int32)
    corner = corner - jnp.array([s // 2 for s in size], jnp.int32)
    # The window holds every image voxel the patch can touch; clamping it inside
    # the image makes the slice exact (dynamic_slice would clamp silently).
    window = tuple(min(p, s) for p, s in zip(size, spatial))
    window_corner = jnp.clip(corner, 0, jnp.array(spatial) - jnp.array(window))
    patch = lax.dynamic_slice(
        image, (*window_corner, jnp.int32(0)), (*window, image.shape[-1])
    )
    inside = jnp.ones(size, bool)
    for axis in range(ndim):  # a loop over the (static) axes, not over the data
        position = corner[axis] + jnp.arange(size[axis])
        in_window = jnp.clip(position - window_corner[axis], 0, window[axis] - 1)
        patch = jnp.take(patch, in_window, axis=axis, mode="clip")
        valid = (position >= 0) & (position < spatial[axis])
        inside = inside & valid.reshape([-1 if a == axis else 1 for a in range(ndim)])
    return jnp.where(inside[..., None], patch, jnp.asarray(pad_value, image.dtype))


def context_view(
    image: jnp.ndarray,
    center: jnp.ndarray,
    size: int | Sequence[int],
    scale: int,
    pad_value: float = 0.0,
) -> jnp.ndarray:
    """A downscaled global view: the region of ``size * scale`` voxels around
    ``center`` (placed like :func:`extract_patch`), averaged over blocks of
    ``scale`` voxels per axis down to ``size``.

    Voxels outside the image count as ``pad_value`` in the block means. The block
    holding the rounded centre is element ``size // 2``, as in the local patch.

    Args:
        image: ``[*spatial, C]`` one example.
        center: ``[ndim]`` voxel coordinates.
        size: the output extent, one int per spatial axis or one for all (static).
        scale: integer downscaling factor (1 gives :func:`extract_patch`).
        pad_value: value of the voxels outside the image.

    Returns:
        ``[*size, C]``, floating point.
    """
    ndim = image.ndim - 1
    size = _static_size(size, ndim, "size")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected a positive int, got {scale!r}")
    region = extract_patch(image, center, tuple(s * scale for s in size), pad_value)
    # [s0*k, s1*k, ..., C] -> [s0, k, s1, k, ..., C]; the mean over the k axes is
    # exactly the block mean (area downsampling), unlike an interpolating resize.
    blocks = region.reshape([d for s in size for d in (s, scale)] + [image.shape[-1]])
    return jnp.mean(blocks, axis=tuple(range(1, 2 * ndim, 2)))


def orthogonal_patches(
    volume: jnp.ndarray,
    center: jnp.ndarray,
    size: int | Sequence[int],
    pad_value: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The three orthogonal 2D patches through a point of a volume.

    With ``(r, c, s) = round(center)`` and ``size = (n0, n1, n2)`` (an int gives
    squares), and each range placed like :func:`extract_patch`:

    - axial: slice ``s`` fixed, ``volume[r - n0//2 : ..., c - n1//2 : ..., s]``,
      axes (rows, columns), ``[n0, n1, C]``;
    - coronal: row ``r`` fixed, ``volume[r, c - n1//2 : ..., s - n2//2 : ...]``,
      axes (columns, slices), ``[n1, n2, C]``;
    - sagittal: column ``c`` fixed, ``volume[r - n0//2 : ..., c, s - n2//2 : ...]``,
      axes (rows, slices), ``[n0, n2, C]``.

    The names assume the usual array layout of a CT or MR volume (slices along
    the last spatial axis); no transpose or flip is applied, so the first plane
    axis is always the lower-numbered volume axis.

    Args:
        volume: ``[H, W, D, C]`` one example.
        center: ``[3]`` voxel coordinates (row, column, slice).
        size: plane patch extent along rows, columns, slices, or one int.
        pad_value: value of the voxels outside the volume.

    Returns:
        ``(axial, coronal, sagittal)``.
    """
    if volume.ndim != 4:
        raise ValueError(
            f"orthogonal_patches expects one volume [H, W, D, C], got shape "
            f"{volume.shape}"
        )
    n0, n1, n2 = _static_size(size, 3, "size")
    axial = extract_patch(volume, center, (n0, n1, 1), pad_value)[:, :, 0]
    coronal = extract_patch(volume, center, (1, n1, n2), pad_value)[0]
    sagittal = extract_patch(volume, center, (n0, 1, n2), pad_value)[:, 0]
    return axial, coronal, sagittal


def check_view_names(names: Sequence[str], spatial_dims: int) -> tuple[str, ...]:
    """Validates view names for images with ``spatial_dims`` spatial axes.

    Raises:
        ValueError: one line naming ``task.views``, for an empty list, an unknown
            name, or a plane view of 2D images.
    """
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    if not names:
        raise ValueError(f"task.views: expected at least one of {VIEW_NAMES}, got none")
    for name in names:
        if name not in VIEW_NAMES:
            raise ValueError(
                f"task.views: unknown view {name!r}, expected names from {VIEW_NAMES}"
            )
        if name in PLANE_VIEWS and spatial_dims != 3:
            raise ValueError(
                f"task.views: {name!r} is a plane of a 3D volume, but the images "
                f"have {spatial_dims} spatial axes; use 'local' or 'context'"
            )
    return names


def view_spatial_dims(names: Sequence[str], spatial_dims: int) -> tuple[int, ...]:
    """Spatial axes of each named view of images with ``spatial_dims`` axes:
    planes are 2D, ``local`` and ``context`` keep the image's. This is the
    ``spatial_dims`` a multistream model needs per stream."""
    names = check_view_names(names, spatial_dims)
    return tuple(2 if name in PLANE_VIEWS else spatial_dims for name in names)


def make_views(
    names: Sequence[str],
    image: jnp.ndarray,
    center: jnp.ndarray,
    *,
    patch_size: int | Sequence[int],
    context_scale: int = 2,
    pad_value: float = 0.0,
) -> tuple[jnp.ndarray, ...]:
    """The named views of every example of a batch, in the order of ``names``.

    - ``local``: :func:`extract_patch` of ``patch_size`` (a square or cube for an
      int), ``[B, *patch, C]``;
    - ``context``: :func:`context_view` of the same output size covering
      ``context_scale`` times as much, ``[B, *patch, C]``;
    - ``axial``, ``coronal``, ``sagittal`` (3D only): the planes of
      :func:`orthogonal_patches`, ``[B, n, n, C]`` for an int ``patch_size``.

    Args:
        names: view names from :data:`VIEW_NAMES`.
        image: ``[B, *spatial, C]``.
        center: ``[B, ndim]`` voxel coordinates of each example's point.
        patch_size: view extent, one int or one per spatial axis (static).
        context_scale: downscaling factor of the context view.
        pad_value: value of the voxels outside the image.

    Returns:
        One array per name.

    Raises:
        ValueError: one line, before any tracing, for bad names (``task.views``),
            sizes or shapes.
    """
    ndim = image.ndim - 2
    if ndim not in (2, 3):
        raise ValueError(
            f"make_views expects a batch [B, H, W, (D,) C], got shape {image.shape}"
        )
    names = check_view_names(names, ndim)
    size = _static_size(patch_size, ndim, "task.patch_size")
    if not isinstance(context_scale, int) or context_scale < 1:
        raise ValueError(
            f"task.context_scale: expected a positive int, got {context_scale!r}"
        )
    if jnp.shape(center) != (image.shape[0], ndim):
        raise ValueError(
            f"center: expected shape ({image.shape[0]}, {ndim}) for images of shape "
            f"{image.shape}, got {jnp.shape(center)}"
        )

    def one(example, point):
        planes = {}
        if any(name in PLANE_VIEWS for name in names):
            planes = dict(
                zip(PLANE_VIEWS, orthogonal_patches(example, point, size, pad_value))
            )
        views = []
        for name in names:
            if name == "local":
                views.append(extract_patch(example, point, size, pad_value))
            elif name == "context":
                views.append(
                    context_view(example, point, size, context_scale, pad_value)
                )
            else:
                views.append(planes[name])
        return tuple(views)

    return jax.vmap(one)(image, center)
