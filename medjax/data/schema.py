"""Field roles: what each field of a dataset's examples *is*.

Every dataset declares ``schema: {key: Role}``. Code that must treat fields by
what they are — augmentation (which fields move with the image and how), patch
sampling, ``medjax-show`` and figures, a task's check that the data has what it
needs — reads roles, never key names.

Roles (``Role.kind``):

- ``image``: spatial axes then channels, ``[*S, C]`` (``[T, *S, C]`` with
  ``time``); resampled with linear interpolation.
- ``label_map``: integer classes per voxel ``[*S]`` (``[T, *S]`` with ``time``);
  resampled by nearest neighbour.
- ``instance_map``: integer instance ids per voxel (lesion 1, 2, ...), as a
  label map.
- ``points``: ``[N, ndim]`` voxel coordinates, with a validity field ``valid``
  ``[N]``; moved by the transform.
- ``boxes``: ``[N, 2 * ndim]`` as ``(min_0, .., min_d, max_0, .., max_d)`` voxel
  coordinates, with ``valid`` ``[N]``; moved through their corners (the box of
  the moved corners).
- ``vector_field``: a displacement ``[*S, ndim]`` in voxels; resampled like an
  image AND rotated by the transform's linear part, as a vector.
- ``class_label``: an integer class (or a 0/1 vector of labels).
- ``target``: a regression value.
- ``features``: a tabular feature vector.
- ``validity``: the flags of a points/boxes field (named by its ``valid``).

A ``time`` flag on ``image``/``label_map``/``instance_map`` fields marks a leading
time axis (cine frames, slice stacks): one geometric transform per example moves
every frame alike.

Roles are frozen and hashable: a task carries the roles of its fields into the
jitted step as static configuration.
"""

import dataclasses
from collections.abc import Mapping

IMAGE = "image"
LABEL_MAP = "label_map"
INSTANCE_MAP = "instance_map"
POINTS = "points"
BOXES = "boxes"
VECTOR_FIELD = "vector_field"
CLASS_LABEL = "class_label"
TARGET = "target"
FEATURES = "features"
VALIDITY = "validity"

KINDS = (
    IMAGE, LABEL_MAP, INSTANCE_MAP, POINTS, BOXES, VECTOR_FIELD, CLASS_LABEL, TARGET,
    FEATURES, VALIDITY,
)
#: Fields laid out on the voxel grid, moved by resampling.
DENSE_KINDS = (IMAGE, LABEL_MAP, INSTANCE_MAP, VECTOR_FIELD)
#: Fields of coordinates, moved by transforming them.
GEOMETRIC_KINDS = (POINTS, BOXES)
_TIMED_KINDS = (IMAGE, LABEL_MAP, INSTANCE_MAP)


@dataclasses.dataclass(frozen=True)
class Role:
    """What one field is.

    Attributes:
        kind: one of ``KINDS``.
        time: the field has a leading time axis (``image``/``label_map``/
            ``instance_map`` only).
        valid: for ``points`` and ``boxes``, the key of their validity flags.
    """

    kind: str
    time: bool = False
    valid: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Role.kind: expected one of {KINDS}, got {self.kind!r}")
        if self.time and self.kind not in _TIMED_KINDS:
            raise ValueError(f"Role: a {self.kind} field cannot have a time axis")
        if (self.valid is not None) != (self.kind in GEOMETRIC_KINDS):
            raise ValueError(
                f"Role: {self.kind} fields "
                + ("need" if self.kind in GEOMETRIC_KINDS else "take no")
                + " a validity key (valid=...)"
            )

    def __str__(self) -> str:
        return self.kind + (" (time)" if self.time else "")


def image(time: bool = False) -> Role:
    return Role(IMAGE, time=time)


def label_map(time: bool = False) -> Role:
    return Role(LABEL_MAP, time=time)


def instance_map(time: bool = False) -> Role:
    return Role(INSTANCE_MAP, time=time)


def points(valid: str) -> Role:
    return Role(POINTS, valid=valid)


def boxes(valid: str) -> Role:
    return Role(BOXES, valid=valid)


VECTOR = Role(VECTOR_FIELD)
CLASS = Role(CLASS_LABEL)
REGRESSION_TARGET = Role(TARGET)
TABULAR = Role(FEATURES)
VALID = Role(VALIDITY)

#: A dataset's (or a task's) roles: ``((key, Role), ...)``, hashable.
Schema = tuple[tuple[str, Role], ...]


def as_schema(roles: Mapping[str, Role] | Schema) -> Schema:
    """``roles`` as a sorted, hashable tuple of pairs, checked: every points or
    boxes field's validity key is in it with the ``validity`` role."""
    pairs = tuple(sorted(dict(roles).items()))
    named = dict(pairs)
    for key, role in pairs:
        if not isinstance(role, Role):
            raise TypeError(f"schema[{key!r}]: expected a Role, got {role!r}")
        if role.valid is not None and named.get(role.valid) != VALID:
            raise ValueError(
                f"schema[{key!r}]: its validity field {role.valid!r} must be in the "
                "schema with the validity role"
            )
    return pairs


def keys_of(schema: Schema, *kinds: str) -> tuple[str, ...]:
    """The keys of ``schema`` whose role is one of ``kinds``, in schema order."""
    return tuple(key for key, role in schema if role.kind in kinds)


def describe(schema: Schema) -> str:
    """``"image 'image', label_map 'organ_mask', ..."``: a schema in one line."""
    return ", ".join(f"{role} {key!r}" for key, role in schema) or "no fields"


def missing_roles(
    needs: Mapping[str, str], schema: Schema
) -> list[tuple[str, str, Role | None]]:
    """``(key, kind needed, role found or None)`` for each field ``needs`` names
    that ``schema`` lacks or holds with another role (a ``label_map`` need is
    met by an ``instance_map`` too: segmentation may binarise instances)."""
    named = dict(schema)
    wrong = []
    for key, kind in needs.items():
        role = named.get(key)
        ok = role is not None and (
            role.kind == kind or (kind == LABEL_MAP and role.kind == INSTANCE_MAP)
        )
        if not ok:
            wrong.append((key, kind, role))
    return wrong
