"""On-device data augmentation: pure functions of ``(key, batch, schema)`` that run
inside the jitted training step.

One :class:`Augmentation` (a frozen, hashable dataclass built from
``conf/augment/*.yaml``) holds every setting. Calling it on a batch with the
batch's field roles (``medjax.data.schema``; what ``Task.batch_roles()`` returns)
draws, per example and independently, which parts apply and with what
parameters, then:

1. **Geometry** (:mod:`medjax.augment.geometry`) — flip, rotation, translation,
   zoom and shear compose into ONE forward affine matrix about the image centre,
   optionally followed by a smooth elastic displacement. Every spatial field is
   moved once by that transform, chosen by its role: images linearly, label and
   instance maps by nearest neighbour, vector fields resampled and rotated as
   vectors, points and boxes (through their corners) moved forward. A field
   with a time axis gets the same transform in every frame.
2. **Intensity** (:mod:`medjax.augment.intensity`) — image fields only, after
   the geometry: rescale, shift, gamma, blur, noise.

Before both, **time** (:mod:`medjax.augment.temporal`, fields with a time axis
only): a cyclic phase shift and a temporal crop choose the frames of every
timed field alike.

Fields the schema does not name, and fields of other roles (class labels,
targets, features), pass through. The spatial rank comes from the roles: an
image's rank minus its channel axis, minus its time axis.

Every part is switched on per example with its own probability via ``jnp.where``,
so shapes stay static and the whole thing is jit- and vmap-able. A part whose
probability is 0 is left out of the traced computation altogether, so the
all-off setting returns the batch unchanged, bit for bit.

Randomness: example ``i`` of a batch uses ``jax.random.fold_in(key, i)``, so its
result does not depend on the batch it sits in, and each part draws from its own
sub-key, so switching one part on does not change the draws of another. Image
fields draw their intensity parameters in schema order (the ``i``-th image
field folds ``i`` into each part's key).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from medjax.augment import fields, geometry, intensity, temporal
from medjax.data import schema as roles

Batch = dict[str, jnp.ndarray]
#: ``((key, Role), ...)`` or ``{key: Role}``: the roles of the batch's fields.
Roles = fields.Roles

# Order of the per-part sub-keys of one example; append only (changing the order
# changes every draw).
_PARTS = (
    "flip",
    "rotation",
    "translation",
    "zoom",
    "shear",
    "elastic",
    "scale",
    "shift",
    "gamma",
    "blur",
    "noise",
    "phase_shift",
    "temporal_crop",
)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random geometric and intensity augmentation of a batch, per example.

    Every ``*_probability`` is the chance that the part is applied to one example
    (drawn independently per example and per part); 0 switches the part off, which
    is the default for all of them. Ranges are ``(min, max)`` pairs sampled
    uniformly unless said otherwise.

    Attributes:
        flip_probability: chance, per axis in ``flip_axes``, of mirroring that axis.
        flip_axes: spatial axes that may be flipped (array-axis order, 0-based);
            ``None`` means every spatial axis.
        rotation_probability: chance of a rotation about the image centre.
        rotation_degrees: largest absolute angle; 2D draws one angle, 3D one angle
            about every axis, each uniform in ``[-rotation_degrees, rotation_degrees]``.
        translation_probability: chance of a translation.
        translation_fraction: largest shift per axis as a fraction of that axis's
            size (uniform in ``[-f, f] * size``).
        zoom_probability: chance of an isotropic zoom about the centre (> 1
            magnifies the content).
        zoom_range: ``(min, max)`` zoom factor, drawn log-uniformly so that
            ``(1/a, a)`` zooms in and out equally often.
        shear_probability: chance of a shear.
        shear_max: largest absolute shear factor (2D: one value; 3D: three), each
            uniform in ``[-shear_max, shear_max]``.
        elastic_probability: chance of a smooth random elastic deformation
            (:func:`medjax.ops.displacement.smooth_random_displacement`).
        elastic_sigma: smoothness of the displacement field, in voxels.
        elastic_magnitude: size of the displacement, in voxels.
        scale_probability: chance of multiplying the image by one random factor.
        scale_range: ``(min, max)`` multiplicative factor.
        shift_probability: chance of adding one random offset to the image.
        shift_range: ``(min, max)`` additive offset, in image intensity units.
        gamma_probability: chance of a gamma change; each channel is min-max
            normalised to [0, 1], raised to ``gamma``, and mapped back to its range.
        gamma_range: ``(min, max)`` exponent.
        noise_probability: chance of adding zero-mean Gaussian noise.
        noise_std_range: ``(min, max)`` noise standard deviation, in intensity units.
        blur_probability: chance of an isotropic Gaussian blur (edges extended by
            their nearest value).
        blur_sigma_range: ``(min, max)`` blur standard deviation, in voxels.
        phase_shift_probability: chance of rolling the frames of every field
            with a time axis by one shift, uniform in ``1 .. T - 1``
            (:mod:`medjax.augment.temporal`: for sequences of one full cycle).
        temporal_crop_frames: null, or keep this many consecutive frames of
            every training sequence, from a uniform start (the length changes:
            evaluation sees whole sequences).
    """

    flip_probability: float = 0.0
    flip_axes: tuple[int, ...] | None = None
    rotation_probability: float = 0.0
    rotation_degrees: float = 0.0
    translation_probability: float = 0.0
    translation_fraction: float = 0.0
    zoom_probability: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    shear_probability: float = 0.0
    shear_max: float = 0.0
    elastic_probability: float = 0.0
    elastic_sigma: float = 4.0
    elastic_magnitude: float = 0.0
    scale_probability: float = 0.0
    scale_range: tuple[float, float] = (1.0, 1.0)
    shift_probability: float = 0.0
    shift_range: tuple[float, float] = (0.0, 0.0)
    gamma_probability: float = 0.0
    gamma_range: tuple[float, float] = (1.0, 1.0)
    noise_probability: float = 0.0
    noise_std_range: tuple[float, float] = (0.0, 0.0)
    blur_probability: float = 0.0
    blur_sigma_range: tuple[float, float] = (1.0, 1.0)
    phase_shift_probability: float = 0.0
    temporal_crop_frames: int | None = None

    def __post_init__(self):
        # Hydra hands lists and ints; tuples of floats keep the dataclass hashable
        # (a static jit argument) and equal however it was written.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                object.__setattr__(self, field.name, tuple(value))
        flip_axes = self.flip_axes
        if flip_axes is not None and not (
            isinstance(flip_axes, tuple)
            and all(isinstance(a, int) and not isinstance(a, bool) for a in flip_axes)
            and all(a >= 0 for a in flip_axes)
        ):
            _invalid("flip_axes", "null or a list of axis indices >= 0", flip_axes)
        for field in dataclasses.fields(self):
            name = field.name
            if name.endswith("_probability"):
                _set_number(self, name, 0.0, 1.0, "a probability in [0, 1]")
        _set_number(self, "rotation_degrees", 0.0, 180.0, "an angle in [0, 180]")
        _set_number(self, "translation_fraction", 0.0, 1.0, "a fraction in [0, 1]")
        _set_number(self, "shear_max", 0.0, math.inf, "a shear factor >= 0")
        _set_number(self, "elastic_magnitude", 0.0, math.inf, "voxels >= 0")
        _set_number(self, "elastic_sigma", 0.0, math.inf, "voxels > 0", open_low=True)
        _set_range(self, "zoom_range", "factors > 0", low=0.0, open_low=True)
        _set_range(self, "scale_range", "factors > 0", low=0.0, open_low=True)
        _set_range(self, "shift_range", "numbers", low=-math.inf)
        _set_range(self, "gamma_range", "exponents > 0", low=0.0, open_low=True)
        _set_range(self, "noise_std_range", "stds >= 0", low=0.0)
        _set_range(self, "blur_sigma_range", "voxels > 0", low=0.0, open_low=True)
        crop = self.temporal_crop_frames
        if crop is not None and (
            isinstance(crop, bool) or not isinstance(crop, int) or crop < 1
        ):
            _invalid("temporal_crop_frames", "null or a number of frames >= 1", crop)

    @property
    def enabled(self) -> bool:
        """Whether any part can apply (``augment=none`` is all off)."""
        return self.temporal_crop_frames is not None or any(
            getattr(self, field.name) > 0.0
            for field in dataclasses.fields(self)
            if field.name.endswith("_probability")
        )

    @property
    def temporal(self) -> bool:
        """Whether a temporal part can apply (else no frame is moved)."""
        crop = self.temporal_crop_frames is not None
        return crop or self.phase_shift_probability > 0.0

    @property
    def geometric(self) -> bool:
        """Whether any geometric part can apply (else no field is resampled)."""
        return any(
            getattr(self, f"{part}_probability") > 0.0
            for part in ("flip", "rotation", "translation", "zoom", "shear", "elastic")
        )

    def __call__(self, key: jax.Array, batch: Batch, schema: Roles) -> Batch:
        """Augments every example of ``batch``; fields not moved pass through.

        Args:
            key: a PRNG key; example ``i`` uses ``jax.random.fold_in(key, i)``.
            batch: arrays with a leading batch axis ``B``, laid out as their roles
                say (``medjax.data.schema``): images ``[B, *S, C]`` floating point
                (``[B, T, *S, C]`` with a time axis), label and instance maps
                ``[B, *S]`` integer or bool (``[B, T, *S]``), vector fields
                ``[B, *S, ndim]``, points ``[B, K, ndim]`` and boxes
                ``[B, N, 2 * ndim]`` voxel coordinates with their validity
                ``[B, K]``. ``S`` is 2D or 3D and is shared.
            schema: the roles of the batch's fields, ``((key, Role), ...)`` (what
                ``Task.batch_roles()`` returns) or ``{key: Role}``.

        Returns:
            A new dict with the same keys and dtypes, and the same shapes but
            for ``T`` with ``temporal_crop_frames``.

        Raises:
            ValueError: a moved field is missing or has the wrong shape or dtype,
                no field says the image size, or ``flip_axes`` names an axis the
                images do not have.
        """
        if not self.enabled:  # all off: any batch passes, e.g. tabular features
            return dict(batch)
        schema = fields.as_pairs(schema)
        size, shape = fields.check(self, batch, schema, batched=True)
        if self.temporal:
            temporal.check(self, batch, schema, batched=True)
        moved = {name: batch[name] for name in fields.moved_keys(schema)}
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(size))

        def one(example_key, example):
            return self._example(example_key, example, schema, shape)

        out = dict(batch)
        out.update(jax.vmap(one)(keys, moved))
        return out

    def example(self, key: jax.Array, example: Batch, schema: Roles) -> Batch:
        """Augments one example (no batch axis); ``__call__`` is this, vmapped.

        ``self(key, batch, schema)`` gives, for example ``i``, exactly
        ``self.example(jax.random.fold_in(key, i), <example i of batch>, schema)``.
        How each role moves: :mod:`medjax.augment.geometry`.

        Args:
            key: this example's PRNG key.
            example: arrays as in ``__call__`` without the leading ``B`` axis.
            schema: as in ``__call__``.

        Returns:
            A new dict with the same keys and dtypes, and the same shapes but
            for ``T`` with ``temporal_crop_frames``.
        """
        schema = fields.as_pairs(schema)
        _, shape = fields.check(self, example, schema, batched=False)
        if self.temporal:
            temporal.check(self, example, schema, batched=False)
        out = dict(example)
        if self.enabled:
            out.update(self._example(key, example, schema, shape))
        return out

    def _example(self, key, example, schema, shape):
        """The augmentation of one example: only the moved fields, returned."""
        part_keys = dict(zip(_PARTS, jax.random.split(key, len(_PARTS)), strict=True))
        out = {}
        if self.temporal:  # frames first: the geometry and intensities follow them
            out.update(temporal.move_frames(self, part_keys, example, schema))
            example = {**example, **out}
        if self.geometric:
            transform = geometry.draw(self, part_keys, shape)
            out.update(geometry.move_fields(transform, example, schema, shape))
        images = [(name, role) for name, role in schema if role.kind == roles.IMAGE]
        for index, (name, role) in enumerate(images):
            image = out.get(name, example[name])
            out[name] = intensity.augment_image(
                self, part_keys, index, image, time=role.time
            )
        return out


def _set_number(
    config: Augmentation,
    name: str,
    low: float,
    high: float,
    expected: str,
    *,
    open_low: bool = False,
) -> None:
    """Checks a scalar field is a number in its interval; stores it as a float."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _invalid(name, expected, value)
    if not (low < value if open_low else low <= value) or not value <= high:
        _invalid(name, expected, value)
    if not math.isfinite(value):
        _invalid(name, f"{expected}, finite", value)
    object.__setattr__(config, name, float(value))


def _set_range(
    config: Augmentation,
    name: str,
    expected: str,
    *,
    low: float,
    open_low: bool = False,
) -> None:
    """Checks a ``(min, max)`` field (min <= max, both above ``low``); as floats."""
    value = getattr(config, name)
    expected = f"a [min, max] pair of {expected} with min <= max"
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
    ):
        _invalid(name, expected, value)
    minimum, maximum = value
    if minimum > maximum or not (low < minimum if open_low else low <= minimum):
        _invalid(name, expected, value)
    if not all(math.isfinite(v) for v in value):
        _invalid(name, f"{expected}, finite", value)
    object.__setattr__(config, name, (float(minimum), float(maximum)))


def _invalid(name: str, expected: str, value) -> None:
    if isinstance(value, tuple):
        value = list(value)
    raise ValueError(f"augment.{name}={value!r}: expected {expected}")
