"""Checks of a batch against its field roles, before augmentation is traced."""

from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from medjax.data import schema as roles

#: ``((key, Role), ...)`` or ``{key: Role}``: the roles of the batch's fields.
Roles = Sequence[tuple[str, roles.Role]] | Mapping[str, roles.Role]
_MOVED_KINDS = roles.DENSE_KINDS + roles.GEOMETRIC_KINDS


def as_pairs(schema: Roles) -> roles.Schema:
    """``schema`` as ``((key, Role), ...)``, in the order given (it orders the
    image fields' intensity draws)."""
    pairs = tuple(schema.items()) if isinstance(schema, Mapping) else tuple(schema)
    for pair in pairs:
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], roles.Role)
        ):
            raise TypeError(
                f"augment: schema entries are (key, Role) pairs, got {pair!r}"
            )
    return pairs


def moved_keys(schema: roles.Schema) -> tuple[str, ...]:
    """The keys augmentation reads and writes: spatial fields and the validity
    flags of points and boxes."""
    keys = []
    for name, role in schema:
        if role.kind in _MOVED_KINDS:
            keys.append(name)
            if role.valid is not None:
                keys.append(role.valid)
    return tuple(keys)


def check(settings, batch, schema, *, batched):
    """Shape and dtype checks before tracing: returns (B or None, spatial shape)."""
    lead = 1 if batched else 0
    where = "batch" if batched else "example"
    open_ = "[B, " if batched else "["
    for name in moved_keys(schema):
        if name not in batch:
            raise ValueError(
                f"augment: {where} has no field {name!r} (has {sorted(batch)})"
            )
    spatial_shape, first = None, None

    def agree(name, shape):
        nonlocal spatial_shape, first
        if spatial_shape is None:
            spatial_shape, first = shape, name
        elif shape != spatial_shape:
            raise ValueError(
                f"augment: {where}[{name!r}] has spatial shape {shape}; expected "
                f"{spatial_shape} like {first!r}"
            )

    # Images first: they say the spatial rank (rank - channel - time).
    for name, role in schema:
        if role.kind != roles.IMAGE:
            continue
        image, time = batch[name], int(role.time)
        frames = "T, " if role.time else ""
        if image.ndim - lead - time - 1 not in (2, 3):
            raise ValueError(
                f"augment: {where}[{name!r}] has shape {image.shape}; expected "
                f"{open_}{frames}*spatial, C] with 2 or 3 spatial axes"
            )
        if not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(
                f"augment: {where}[{name!r}] is {image.dtype}; expected a "
                "floating-point image"
            )
        agree(name, tuple(image.shape[lead + time : -1]))
    for name, role in schema:
        if role.kind not in (roles.LABEL_MAP, roles.INSTANCE_MAP):
            continue
        labels, time = batch[name], int(role.time)
        shape = tuple(labels.shape[lead + time :])
        if spatial_shape is None and len(shape) not in (2, 3):
            raise ValueError(
                f"augment: {where}[{name!r}] has shape {labels.shape}; expected "
                f"{open_}{'T, ' if role.time else ''}*spatial] with 2 or 3 axes"
            )
        agree(name, shape)
        if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
            raise ValueError(
                f"augment: {where}[{name!r}] is {labels.dtype}; expected an "
                "integer or bool label map"
            )
    for name, role in schema:
        if role.kind != roles.VECTOR_FIELD:
            continue
        field = batch[name]
        ndim = field.shape[-1]
        if field.ndim - lead - 1 != ndim or ndim not in (2, 3):
            raise ValueError(
                f"augment: {where}[{name!r}] has shape {field.shape}; expected "
                f"{open_}*spatial, ndim] with ndim = 2 or 3 spatial axes"
            )
        if not jnp.issubdtype(field.dtype, jnp.floating):
            raise ValueError(
                f"augment: {where}[{name!r}] is {field.dtype}; expected a "
                "floating-point displacement"
            )
        agree(name, tuple(field.shape[lead:-1]))
    if spatial_shape is None:
        raise ValueError(
            "augment: the batch has no image, label_map, instance_map or "
            f"vector_field field to move (its roles: {roles.describe(schema)}); "
            "points and boxes alone do not say the image size"
        )
    ndim = len(spatial_shape)
    for name, role in schema:
        if role.kind not in roles.GEOMETRIC_KINDS:
            continue
        coords, valid = batch[name], batch[role.valid]
        width = ndim if role.kind == roles.POINTS else 2 * ndim
        if coords.ndim != lead + 2 or coords.shape[-1] != width:
            count = "K" if role.kind == roles.POINTS else "N"
            raise ValueError(
                f"augment: {where}[{name!r}] has shape {coords.shape}; "
                f"expected {open_}{count}, {width}] ({role.kind} of {ndim}D images)"
            )
        if valid.shape != coords.shape[:-1]:
            raise ValueError(
                f"augment: {where}[{role.valid!r}] has shape {valid.shape}; "
                f"expected {coords.shape[:-1]} like {name!r}"
            )
    flip_axes = settings.flip_axes
    if flip_axes is not None and any(a >= ndim for a in flip_axes):
        raise ValueError(
            f"augment.flip_axes={list(flip_axes)}: the images have {ndim} "
            f"spatial axes, expected axes in 0..{ndim - 1}"
        )
    if not batched:
        return None, spatial_shape
    sizes = {batch[name].shape[0] for name in moved_keys(schema)}
    if len(sizes) != 1:
        raise ValueError(
            f"augment: the moved fields have different batch sizes {sorted(sizes)}"
        )
    return sizes.pop(), spatial_shape
