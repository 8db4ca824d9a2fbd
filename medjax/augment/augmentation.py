"""On-device data augmentation: pure functions of ``(key, batch)`` that run inside
the jitted training step.

One :class:`Augmentation` (a frozen, hashable dataclass built from
``conf/augment/*.yaml``) holds every setting. Calling it on a batch draws, per
example and independently, which parts apply and with what parameters, then:

1. **Geometry** — flip, rotation, translation, zoom and shear compose into ONE
   forward affine matrix about the image centre (:func:`medjax.ops.spatial.affine_matrix`),
   optionally followed by a smooth elastic displacement. The output-to-input
   coordinate map is built once and every spatial field is resampled exactly once
   from it: images linearly (``cval`` = the image's per-channel minimum, so air
   stays air), masks by nearest neighbour (``cval`` 0), and points are moved
   forward (see :meth:`Augmentation.example` for how elastic moves them). Points
   that leave the image are marked invalid.
2. **Intensity** — applied to images only, after the geometry, in this order:
   multiplicative rescale, additive shift, gamma, Gaussian blur, Gaussian noise.

Every part is switched on per example with its own probability via ``jnp.where``,
so shapes stay static and the whole thing is jit- and vmap-able. A part whose
probability is 0 is left out of the traced computation altogether, so the
all-off setting returns the batch unchanged, bit for bit.

Randomness: example ``i`` of a batch uses ``jax.random.fold_in(key, i)``, so its
result does not depend on the batch it sits in, and each part draws from its own
sub-key, so switching one part on does not change the draws of another.
"""

import dataclasses
import math
from collections.abc import Sequence

import dm_pix
import jax
import jax.numpy as jnp

from medjax.ops import spatial

Batch = dict[str, jnp.ndarray]

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
)
# Fixed-point iterations that invert the elastic displacement at the points.
_ELASTIC_POINT_ITERATIONS = 5
# The Gaussian blur kernel reaches this many sigmas (of the largest sigma) out.
_BLUR_TRUNCATE = 3.0


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
            (:func:`medjax.ops.spatial.smooth_random_displacement`).
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

    @property
    def enabled(self) -> bool:
        """Whether any part can apply (``augment=none`` is all off)."""
        return any(
            getattr(self, field.name) > 0.0
            for field in dataclasses.fields(self) if field.name.endswith("_probability")
        )

    @property
    def geometric(self) -> bool:
        """Whether any geometric part can apply (else no field is resampled)."""
        return any(
            getattr(self, f"{part}_probability") > 0.0
            for part in ("flip", "rotation", "translation", "zoom", "shear", "elastic")
        )

    def __call__(
        self,
        key: jax.Array,
        batch: Batch,
        *,
        images: Sequence[str] = ("image",),
        masks: Sequence[str] = (),
        points: Sequence[tuple[str, str]] = (),
    ) -> Batch:
        """Augments every example of ``batch``; fields not named pass through.

        Args:
            key: a PRNG key; example ``i`` uses ``jax.random.fold_in(key, i)``.
            batch: arrays with a leading batch axis ``B``. Named fields:
                images ``[B, *S, C]`` floating point, masks ``[B, *S]`` integer or
                bool label maps, points ``[B, K, ndim]`` voxel coordinates with
                their validity ``[B, K]`` bool. ``S`` is 2D or 3D and is shared.
            images: keys of the images (moved, then intensity-augmented).
            masks: keys of the label maps moved with the images.
            points: ``(points_key, valid_key)`` pairs of point sets moved with the
                images.

        Returns:
            A new dict with the same keys, shapes and dtypes.

        Raises:
            ValueError: a named field is missing or has the wrong shape or dtype,
                or ``flip_axes`` names an axis the images do not have.
        """
        if not self.enabled:  # all off: any batch passes, e.g. tabular features
            return dict(batch)
        images, masks, points = tuple(images), tuple(masks), tuple(map(tuple, points))
        size, _ = self._check(batch, images, masks, points, batched=True)
        names = images + masks + tuple(name for pair in points for name in pair)
        fields = {name: batch[name] for name in names}
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(size))

        def one(example_key, example):
            return self._example(example_key, example, images, masks, points)

        out = dict(batch)
        out.update(jax.vmap(one)(keys, fields))
        return out

    def example(
        self,
        key: jax.Array,
        example: Batch,
        *,
        images: Sequence[str] = ("image",),
        masks: Sequence[str] = (),
        points: Sequence[tuple[str, str]] = (),
    ) -> Batch:
        """Augments one example (no batch axis); ``__call__`` is this, vmapped.

        ``self(key, batch)`` gives, for example ``i``, exactly
        ``self.example(jax.random.fold_in(key, i), <example i of batch>)``.

        Geometry: with forward affine ``A`` and elastic displacement ``d``, every
        output voxel ``x`` reads the input at ``A^-1 (x + d(x))`` (the affine
        first, then the elastic warp). A point ``p`` goes to ``q = A p`` and then
        to the ``y`` that solves ``y + d(y) = q``, found by the fixed-point
        iteration ``y <- q - d(y)`` (5 steps from ``y = q``, with ``d`` sampled
        linearly at ``y``); this converges because a smooth field has a small
        gradient. Points outside ``[0, size - 1]`` on any axis become invalid.

        Args:
            key: this example's PRNG key.
            example: arrays as in ``__call__`` without the leading ``B`` axis:
                images ``[*S, C]``, masks ``[*S]``, points ``[K, ndim]`` and ``[K]``.
            images: as in ``__call__``.
            masks: as in ``__call__``.
            points: as in ``__call__``.

        Returns:
            A new dict with the same keys, shapes and dtypes.
        """
        images, masks, points = tuple(images), tuple(masks), tuple(map(tuple, points))
        self._check(example, images, masks, points, batched=False)
        out = dict(example)
        out.update(self._example(key, example, images, masks, points))
        return out

    def _check(self, batch, images, masks, points, *, batched):
        """Shape and dtype checks before tracing: returns (B or None, spatial)."""
        lead = 1 if batched else 0
        where = "batch" if batched else "example"
        for name in images + masks + tuple(n for pair in points for n in pair):
            if name not in batch:
                raise ValueError(
                    f"augment: {where} has no field {name!r} (has {sorted(batch)})"
                )
        for pair in points:
            if len(pair) != 2:
                raise ValueError(
                    f"augment: points are (points_key, valid_key) pairs, got {pair!r}"
                )
        spatial_shape = None
        for name in images:
            image = batch[name]
            if image.ndim - lead - 1 not in (2, 3):
                raise ValueError(
                    f"augment: {where}[{name!r}] has shape {image.shape}; expected "
                    f"{'[B, ' if batched else '['}*spatial, C] with 2 or 3 spatial axes"
                )
            if not jnp.issubdtype(image.dtype, jnp.floating):
                raise ValueError(
                    f"augment: {where}[{name!r}] is {image.dtype}; expected a "
                    "floating-point image"
                )
            shape = tuple(image.shape[lead:-1])
            if spatial_shape is None:
                spatial_shape = shape
            elif shape != spatial_shape:
                raise ValueError(
                    f"augment: {where}[{name!r}] has spatial shape {shape}; expected "
                    f"{spatial_shape} like {images[0]!r}"
                )
        for name in masks:
            mask = batch[name]
            shape = tuple(mask.shape[lead:])
            if spatial_shape is None and len(shape) in (2, 3):
                spatial_shape = shape
            if shape != spatial_shape:
                raise ValueError(
                    f"augment: {where}[{name!r}] has shape {mask.shape}; expected "
                    f"the images' spatial shape {spatial_shape}"
                )
            if not (jnp.issubdtype(mask.dtype, jnp.integer) or mask.dtype == jnp.bool_):
                raise ValueError(
                    f"augment: {where}[{name!r}] is {mask.dtype}; expected an "
                    "integer or bool label map"
                )
        if spatial_shape is None:
            raise ValueError(
                "augment: name at least one image or mask; points alone do not say "
                "the image size"
            )
        ndim = len(spatial_shape)
        for points_key, valid_key in points:
            coords, valid = batch[points_key], batch[valid_key]
            if coords.ndim != lead + 2 or coords.shape[-1] != ndim:
                raise ValueError(
                    f"augment: {where}[{points_key!r}] has shape {coords.shape}; "
                    f"expected {'[B, ' if batched else '['}K, {ndim}]"
                )
            if valid.shape != coords.shape[:-1]:
                raise ValueError(
                    f"augment: {where}[{valid_key!r}] has shape {valid.shape}; "
                    f"expected {coords.shape[:-1]} like {points_key!r}"
                )
        if self.flip_axes is not None and any(a >= ndim for a in self.flip_axes):
            raise ValueError(
                f"augment.flip_axes={list(self.flip_axes)}: the images have {ndim} "
                f"spatial axes, expected axes in 0..{ndim - 1}"
            )
        if not batched:
            return None, spatial_shape
        named = images + masks + tuple(name for pair in points for name in pair)
        sizes = {batch[name].shape[0] for name in named}
        if len(sizes) != 1:
            raise ValueError(
                f"augment: the named fields have different batch sizes {sorted(sizes)}"
            )
        return sizes.pop(), spatial_shape

    def _example(self, key, example, images, masks, points):
        """The augmentation of one example: only the named fields, returned."""
        part_keys = dict(zip(_PARTS, jax.random.split(key, len(_PARTS)), strict=True))
        reference = example[images[0]] if images else example[masks[0]]
        shape = reference.shape[:-1] if images else reference.shape
        out = {}
        if self.geometric:
            out.update(self._geometry(part_keys, example, shape, images, masks, points))
        else:
            out.update({name: example[name] for name in images})
        for index, name in enumerate(images):
            out[name] = self._intensity(part_keys, index, out[name])
        return out

    def _geometry(self, part_keys, example, shape, images, masks, points):
        """Draws one affine (+ elastic) warp and moves every named field with it."""
        ndim = len(shape)
        angles = 1 if ndim == 2 else 3
        applied = []
        kwargs = {}
        if self.flip_probability > 0.0:
            axes = range(ndim) if self.flip_axes is None else self.flip_axes
            allowed = jnp.asarray([axis in axes for axis in range(ndim)])
            coins = jax.random.bernoulli(
                part_keys["flip"], self.flip_probability, (ndim,)
            )
            flips = allowed & coins
            applied.append(flips.any())
            kwargs["flip"] = flips.astype(jnp.float32)
        if self.rotation_probability > 0.0:
            coin, value_key = _coin(part_keys["rotation"], self.rotation_probability)
            limit = math.radians(self.rotation_degrees)
            rotation = jax.random.uniform(
                value_key, (angles,), minval=-limit, maxval=limit
            )
            rotation = jnp.where(coin, rotation, 0.0)
            applied.append(coin)
            kwargs["rotation"] = rotation[0] if ndim == 2 else rotation
        if self.translation_probability > 0.0:
            coin, value_key = _coin(
                part_keys["translation"], self.translation_probability
            )
            fraction = jax.random.uniform(
                value_key,
                (ndim,),
                minval=-self.translation_fraction,
                maxval=self.translation_fraction,
            )
            applied.append(coin)
            kwargs["translation"] = jnp.where(
                coin, fraction * jnp.asarray(shape, jnp.float32), 0.0
            )
        if self.zoom_probability > 0.0:
            coin, value_key = _coin(part_keys["zoom"], self.zoom_probability)
            low, high = (math.log(z) for z in self.zoom_range)
            zoom = jnp.exp(jax.random.uniform(value_key, (), minval=low, maxval=high))
            applied.append(coin)
            kwargs["zoom"] = jnp.full((ndim,), jnp.where(coin, zoom, 1.0))
        if self.shear_probability > 0.0:
            coin, value_key = _coin(part_keys["shear"], self.shear_probability)
            shear = jax.random.uniform(
                value_key, (angles,), minval=-self.shear_max, maxval=self.shear_max
            )
            shear = jnp.where(coin, shear, 0.0)
            applied.append(coin)
            kwargs["shear"] = shear[0] if ndim == 2 else shear
        matrix = spatial.affine_matrix(
            ndim, center=spatial.image_center(shape), **kwargs
        )
        inverse = jnp.linalg.inv(matrix)

        grid = spatial.identity_grid(shape)
        displacement = None
        if self.elastic_probability > 0.0:
            coin, value_key = _coin(part_keys["elastic"], self.elastic_probability)
            displacement = spatial.smooth_random_displacement(
                value_key,
                shape,
                sigma=self.elastic_sigma,
                magnitude=self.elastic_magnitude,
            )
            displacement = jnp.where(coin, displacement, 0.0)
            applied.append(coin)
            grid = grid + displacement
        # Output voxel x reads the input at A^-1 (x + d(x)): one map for all fields.
        coords = spatial.transform_points(inverse, grid.reshape(-1, ndim)).reshape(
            grid.shape
        )
        moved = jnp.stack(applied).any()

        out = {}
        for name in images:
            image = example[name]
            # Per-channel background: what enters from outside the field of view.
            background = image.min(axis=tuple(range(ndim)))
            warped = jax.vmap(
                lambda channel, cval: spatial.sample(
                    channel, coords, order=1, cval=cval
                ),
                in_axes=(-1, 0),
                out_axes=-1,
            )(image, background)
            out[name] = jnp.where(moved, warped.astype(image.dtype), image)
        for name in masks:
            mask = example[name]
            warped = spatial.sample(mask.astype(jnp.float32), coords, order=0, cval=0.0)
            out[name] = jnp.where(moved, warped.astype(mask.dtype), mask)
        upper = jnp.asarray(shape, jnp.float32) - 1.0
        for points_key, valid_key in points:
            original, valid = example[points_key], example[valid_key]
            target = spatial.transform_points(matrix, original.astype(jnp.float32))
            if displacement is not None:
                target = spatial.invert_displacement_at(
                    displacement, target, _ELASTIC_POINT_ITERATIONS
                )
            inside = jnp.all((target >= 0.0) & (target <= upper), axis=-1)
            out[points_key] = jnp.where(moved, target.astype(original.dtype), original)
            out[valid_key] = jnp.where(moved, valid & inside, valid).astype(valid.dtype)
        return out

    def _intensity(self, part_keys, index, image):
        """Rescale, shift, gamma, blur, noise of one image ``[*S, C]``.

        Each image field draws its own parameters (sub-keys folded with ``index``).
        """
        dtype = image.dtype

        def draw(part, probability):
            return _coin(jax.random.fold_in(part_keys[part], index), probability)

        if self.scale_probability > 0.0:
            coin, value_key = draw("scale", self.scale_probability)
            factor = _uniform(value_key, self.scale_range).astype(dtype)
            image = jnp.where(coin, image * factor, image)
        if self.shift_probability > 0.0:
            coin, value_key = draw("shift", self.shift_probability)
            offset = _uniform(value_key, self.shift_range).astype(dtype)
            image = jnp.where(coin, image + offset, image)
        if self.gamma_probability > 0.0:
            coin, value_key = draw("gamma", self.gamma_probability)
            gamma = _uniform(value_key, self.gamma_range).astype(dtype)
            image = jnp.where(coin, adjust_gamma(image, gamma), image)
        if self.blur_probability > 0.0:
            coin, value_key = draw("blur", self.blur_probability)
            sigma = _uniform(value_key, self.blur_sigma_range)
            radius = math.ceil(_BLUR_TRUNCATE * self.blur_sigma_range[1])
            blurred = gaussian_blur(image, sigma, radius=radius).astype(dtype)
            image = jnp.where(coin, blurred, image)
        if self.noise_probability > 0.0:
            coin, value_key = draw("noise", self.noise_probability)
            std_key, noise_key = jax.random.split(value_key)
            std = _uniform(std_key, self.noise_std_range)
            noise = std * jax.random.normal(noise_key, image.shape)
            image = jnp.where(coin, image + noise.astype(dtype), image)
        return image


def adjust_gamma(image: jnp.ndarray, gamma: jnp.ndarray | float) -> jnp.ndarray:
    """Gamma of each channel's min-max range: ``lo + (hi - lo) * u ** gamma``.

    Args:
        image: ``[*S, C]`` floating point.
        gamma: scalar exponent (> 0), may be traced.

    Returns:
        ``[*S, C]``, with ``u = (image - lo) / (hi - lo)`` per channel; a constant
        channel is returned unchanged.
    """
    axes = tuple(range(image.ndim - 1))
    low = image.min(axis=axes, keepdims=True)
    span = image.max(axis=axes, keepdims=True) - low
    safe_span = jnp.where(span > 0, span, 1.0)
    adjusted = low + safe_span * dm_pix.adjust_gamma((image - low) / safe_span, gamma)
    return jnp.where(span > 0, adjusted, image)


def gaussian_blur(
    image: jnp.ndarray, sigma: jnp.ndarray | float, *, radius: int
) -> jnp.ndarray:
    """Isotropic Gaussian blur of ``[*S, C]``, edges extended by their nearest value.

    Matches ``scipy.ndimage.gaussian_filter(image, (sigma,) * ndim + (0,),
    mode="nearest", radius=radius)``.

    Args:
        image: ``[*S, C]`` floating point, 2 or 3 spatial axes.
        sigma: standard deviation in voxels (> 0), may be traced.
        radius: kernel half-width in voxels (static).

    Returns:
        ``[*S, C]``.
    """
    ndim = image.ndim - 1
    # Edge padding + VALID convolution: zero padding would darken the borders.
    padded = jnp.pad(image, [(radius, radius)] * ndim + [(0, 0)], mode="edge")
    if ndim == 2:
        return dm_pix.gaussian_blur(padded, sigma, 2 * radius + 1, padding="VALID")
    # Hand-written for 3D (dm_pix blurs 2D images only): the Gaussian separates,
    # so one 1-D jax.scipy convolution per axis is exact.
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(image.dtype)
    blurred = padded
    for axis in range(ndim):
        shape = [1] * image.ndim
        shape[axis] = 2 * radius + 1
        blurred = jax.scipy.signal.convolve(
            blurred, kernel.reshape(shape), mode="valid", method="direct"
        )
    return blurred


def _coin(key: jax.Array, probability: float) -> tuple[jax.Array, jax.Array]:
    """(whether the part applies, a key for its parameters)."""
    coin_key, value_key = jax.random.split(key)
    return jax.random.bernoulli(coin_key, probability), value_key


def _uniform(key: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    return jax.random.uniform(key, (), minval=bounds[0], maxval=bounds[1])


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
