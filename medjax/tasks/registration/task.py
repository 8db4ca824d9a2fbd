"""Learned registration through the common ``train_step``: a network sees a
fixed and a moving image stacked as channels and outputs the transform that
warps the moving image onto the fixed one (VoxelMorph's unsupervised setting).

Pairs are drawn on the device from any data with an image and a label map
(``medjax.data.datasets.phantoms.registration_pairs``): the fixed image is the
example's image, the moving image the same anatomy (or its MR twin, with
``moving_image_key: mr_image``) under a random affine and a smooth elastic
deformation, with the label map and the landmarks moved along. Training pairs
are new at every step; evaluation pairs are a function of the example alone
(a key hashed from its pixels), so every evaluation of every checkpoint and run
sees the same pairs, whatever the batch size or number of devices.

The model outputs either an affine matrix ``[B, ndim+1, ndim+1]`` (fixed voxel
-> moving voxel, ``medjax.models.registration.AffineRegressor``) or a pull-back
displacement ``[B, *S, ndim]`` in voxels (``VoxelMorph``): ``warped(x) =
moving(x + d(x))``; an affine becomes ``d(x) = A x - x``.

Loss per pair: ``similarity_loss(similarity)`` of fixed against warped (lncc
for monomodal pairs as VoxelMorph, mi for CT<->MR) + ``regularization`` x the
diffusion penalty of a dense field (an affine is not penalised), + optionally
``dice_weight`` x (1 - soft Dice of the warped one-hot moving labels against the
fixed labels; VoxelMorph's auxiliary segmentation loss), + optionally
``supervised_weight`` x the mean squared error to the true field (for debugging:
it shows whether a network can learn the mapping at all; off by default, since
real pairs have no true field).

Metrics per pair: ``dice`` (warped organ labels, mean over the organs in the
fixed image), ``tre`` (landmarks, mm with the data's spacing), ``folding`` (%
of voxels with det J <= 0), ``sd_log_jacobian``, the loss's terms. Over a
split: ``dice_<organ>``, ``tre`` pooled over all valid landmarks, ``hd95`` (mm,
mean over organs; ``hd95: false`` skips it) and ``initial_dice`` /
``initial_tre`` (the identity transform: how hard the pairs are).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from medjax import losses
from medjax.data import schema as roles
from medjax.data.datasets.phantoms.registration_pairs import registration_pair
from medjax.losses import registration as registration_losses
from medjax.metrics import registration as registration_metrics
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial
from medjax.runtime import random_key
from medjax.tasks.base import Batch, Task

#: The prepared batch's fields and their roles.
_PAIR_ROLES = (
    ("fixed", roles.image()),
    ("moving", roles.image()),
    ("fixed_labels", roles.label_map()),
    ("moving_labels", roles.label_map()),
    ("pair_displacement", roles.VECTOR),
)
_POINT_ROLES = (
    ("fixed_points", roles.points(valid="points_valid")),
    ("moving_points", roles.points(valid="points_valid")),
    ("points_valid", roles.VALID),
)


def example_keys(images: jnp.ndarray, seed: int = 0) -> jax.Array:
    """One PRNG key per example, a function of its pixels alone: the image
    ``[B, ...]`` quantised to 1/1024 and hashed by an integer dot product with
    a fixed pattern (uint32 arithmetic wraps exactly, so the sum is the same in
    any reduction order, batch size or sharding)."""
    batch = images.shape[0]
    quantised = jnp.round(images.reshape(batch, -1).astype(jnp.float32) * 1024.0)
    values = quantised.astype(jnp.int32).astype(jnp.uint32)
    positions = jnp.arange(values.shape[1], dtype=jnp.uint32)
    pattern = positions * jnp.uint32(2654435761) + jnp.uint32(0x9E3779B9)
    hashes = jnp.sum(values * pattern, axis=1, dtype=jnp.uint32)
    base = random_key(seed)
    return jax.vmap(lambda h: jax.random.fold_in(base, h))(hashes)


def _nan_to_zero(values: jnp.ndarray) -> jnp.ndarray:
    return jnp.where(jnp.isfinite(values), values, 0.0)


@dataclasses.dataclass(frozen=True)
class RegistrationTask(Task):
    """Register synthetic fixed/moving pairs drawn from the data's images.

    Attributes:
        image_key: the data's ``image`` field ``[B, *S, C]``: the fixed image.
        moving_image_key: another ``image`` field of the same anatomy whose
            warp is the moving image (``mr_image``: CT<->MR pairs); None:
            monomodal, the fixed image warped.
        label_key: the data's ``label_map`` field (organ labels), moved along.
        landmarks_key: a ``points`` field moved along for TRE (None: no TRE).
        num_classes / class_names: label values 0..num_classes-1, 0 background.
        similarity: ``ssd``, ``ncc``, ``lncc`` or ``mi``.
        similarity_options: ``{name: value}`` for it (``window``, ``num_bins``).
        regularization: weight of the diffusion penalty (dense fields only).
        dice_weight: weight of the soft Dice term on warped labels (0: off).
        supervised_weight: weight of the squared error to the true field (0:
            off; for debugging).
        max_rotation_degrees / max_translation / zoom_range / max_shear /
            elastic_sigma / elastic_magnitude: the random pairs
            (``registration_pair``).
        spacing: voxel size for TRE and HD95 (None: the data's).
        hd95: compute HD95 over the split (host side).
        eval_seed: the base of the evaluation pairs' keys.
        num_figure_cases: pairs drawn at each evaluation.
    """

    image_key: str = "image"
    moving_image_key: str | None = None
    label_key: str = "organ_mask"
    landmarks_key: str | None = "landmarks"
    num_classes: int = 8
    class_names: tuple[str, ...] | None = None
    similarity: str = "lncc"
    similarity_options: Any = ()
    regularization: float = 1.0
    dice_weight: float = 0.0
    supervised_weight: float = 0.0
    max_rotation_degrees: float = 10.0
    max_translation: float = 0.05
    zoom_range: tuple[float, float] = (0.9, 1.1)
    max_shear: float = 0.05
    elastic_sigma: float = 4.0
    elastic_magnitude: float = 1.0
    spacing: tuple[float, ...] | None = None
    hd95: bool = True
    eval_seed: int = 0
    num_figure_cases: int = 4

    primary_metric = "dice"

    def __post_init__(self):
        options = self.similarity_options
        options = dict(options) if options else {}
        object.__setattr__(self, "similarity_options", tuple(sorted(options.items())))
        for name in ("class_names", "zoom_range", "spacing"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.similarity not in registration_losses.SIMILARITIES:
            raise ValueError(
                f"task.similarity: expected one of "
                f"{sorted(registration_losses.SIMILARITIES)}, got {self.similarity!r}"
            )
        if self.num_classes < 2:
            raise ValueError(f"task.num_classes: expected >= 2, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"task.class_names: expected {self.num_classes} names, got "
                f"{len(self.class_names)}"
            )
        for name in ("regularization", "dice_weight", "supervised_weight"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"task.{name}: expected >= 0, got {getattr(self, name)}"
                )

    @property
    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(f"class_{k}" for k in range(self.num_classes))

    # -- what the task reads ---------------------------------------------------------

    def needs(self) -> dict[str, str]:
        needs = {self.image_key: roles.IMAGE, self.label_key: roles.LABEL_MAP}
        if self.moving_image_key:
            needs[self.moving_image_key] = roles.IMAGE
        if self.landmarks_key:
            needs[self.landmarks_key] = roles.POINTS
        return needs

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> "Task":
        """Checks the data's roles; ``spacing: null`` becomes the data's."""
        task = super().configure(data, task_name=task_name, data_name=data_name)
        if task.spacing is None and getattr(data, "spacing", None) is not None:
            task = dataclasses.replace(task, spacing=tuple(data.spacing))
        return task

    def batch_roles(self) -> roles.Schema:
        return _PAIR_ROLES + (_POINT_ROLES if self.landmarks_key else ())

    # -- inside the jitted steps -----------------------------------------------------

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """A fixed/moving pair per example: fresh random transforms in
        training, the example's own fixed one at evaluation."""
        images = batch[self.image_key].astype(jnp.float32)
        if train:
            keys = jax.random.split(key, images.shape[0])
        else:
            keys = example_keys(images, self.eval_seed)
        sources = (
            images
            if self.moving_image_key is None
            else batch[self.moving_image_key].astype(jnp.float32)
        )
        points = (
            batch[self.landmarks_key].astype(jnp.float32)
            if self.landmarks_key
            else jnp.zeros((images.shape[0], 0, images.ndim - 2), jnp.float32)
        )
        options = {
            "max_rotation_degrees": self.max_rotation_degrees,
            "max_translation": self.max_translation,
            "zoom_range": self.zoom_range,
            "max_shear": self.max_shear,
            "elastic_sigma": self.elastic_sigma,
            "elastic_magnitude": self.elastic_magnitude,
        }

        def one(k, image, source, labels, landmarks):
            return registration_pair(
                k,
                image,
                moving_image=source,
                masks={"labels": labels},
                points=landmarks,
                **options,
            )

        pairs = jax.vmap(one)(keys, images, sources, batch[self.label_key], points)
        prepared = {
            "fixed": pairs["fixed"],
            "moving": pairs["moving"],
            "fixed_labels": pairs["fixed_labels"].astype(jnp.int32),
            "moving_labels": pairs["moving_labels"].astype(jnp.int32),
            "pair_displacement": pairs["displacement"],
            "valid": batch["valid"],
        }
        if self.landmarks_key:
            role = dict(self.field_roles()).get(self.landmarks_key)
            valid_key = role.valid if role is not None else None
            prepared["fixed_points"] = pairs["fixed_points"]
            prepared["moving_points"] = pairs["moving_points"]
            prepared["points_valid"] = (
                batch[valid_key].astype(bool)
                if valid_key in batch
                else jnp.ones(points.shape[:2], bool)
            )
        return prepared

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return jnp.concatenate([batch["fixed"], batch["moving"]], axis=-1)

    @staticmethod
    def is_affine(outputs: jnp.ndarray) -> bool:
        """Whether the model output an affine matrix ``[B, n+1, n+1]``."""
        return outputs.ndim == 3

    def displacement(self, outputs: jnp.ndarray, batch: Batch) -> jnp.ndarray:
        """The pull-back field ``[B, *S, ndim]`` of the model's outputs."""
        if not self.is_affine(outputs):
            return outputs.astype(jnp.float32)
        grid = spatial.identity_grid(tuple(batch["fixed"].shape[1:-1]))
        return jax.vmap(lambda a: spatial.apply_homogeneous(a, grid) - grid)(
            outputs.astype(jnp.float32)
        )

    @staticmethod
    def warp(moving: jnp.ndarray, field: jnp.ndarray) -> jnp.ndarray:
        """Moving images ``[B, *S, C]`` warped by ``field``, the outside filled
        with each image's minimum (its background)."""
        return jax.vmap(
            lambda m, d: dense_fields.warp_displacement(m, d, cval=jnp.min(m))
        )(moving, field)

    @staticmethod
    def _background_at_zero(fixed, warped, batch):
        """Both images shifted by their minimum (their background, and what
        fills the warped image outside the moving one): the local NCC's
        windows are zero-padded at the image's edge, so a background of -1 (air
        in windowed CT) would make an edge there, and a constant warped image
        would then correlate perfectly along it (an attractor that moves the
        image out of view). SSD (same shift for both of a monomodal pair), NCC
        and MI do not change otherwise."""
        axes = tuple(range(1, fixed.ndim))
        low_fixed = jnp.min(fixed, axis=axes, keepdims=True)
        low_moving = jnp.min(batch["moving"], axis=axes, keepdims=True)
        return fixed - low_fixed, warped - low_moving

    def _soft_dice(self, batch: Batch, field: jnp.ndarray) -> jnp.ndarray:
        """Soft Dice ``[B]`` of the linearly warped one-hot moving labels against
        the fixed labels, mean over the foreground classes the fixed image holds."""
        one_hot = jax.nn.one_hot(batch["moving_labels"], self.num_classes)
        warped = jax.vmap(dense_fields.warp_displacement)(one_hot, field)
        target = jax.nn.one_hot(batch["fixed_labels"], self.num_classes)
        axes = tuple(range(1, target.ndim - 1))
        overlap = jnp.sum(warped * target, axis=axes)
        total = jnp.sum(warped, axis=axes) + jnp.sum(target, axis=axes)
        dice = (2 * overlap + 1e-5) / (total + 1e-5)
        present = (jnp.sum(target, axis=axes) > 0).at[:, 0].set(False)
        return jnp.sum(dice * present, -1) / jnp.maximum(jnp.sum(present, -1), 1)

    def _true_field(self, batch: Batch) -> jnp.ndarray:
        """The field that undoes the pair's deformation: ``u(x) = y - x`` with
        ``y + d(y) = x`` (``d`` maps moving voxels to fixed ones)."""
        shape = tuple(batch["fixed"].shape[1:-1])
        grid = spatial.identity_grid(shape).reshape(-1, len(shape))

        def one(d):
            return dense_fields.invert_displacement_at(d, grid, 20).reshape(
                *shape, len(shape)
            ) - grid.reshape(*shape, len(shape))

        return jax.vmap(one)(batch["pair_displacement"])

    def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        valid = batch["valid"]
        field = self.displacement(outputs, batch)
        warped = self.warp(batch["moving"], field)
        similarity = registration_losses.similarity_loss(
            self.similarity,
            *self._background_at_zero(batch["fixed"], warped, batch),
            mask=valid,
            **dict(self.similarity_options),
        )
        smoothness = (
            jnp.zeros_like(similarity)
            if self.is_affine(outputs)
            else registration_losses.diffusion_penalty(field, mask=valid)
        )
        total = similarity + self.regularization * smoothness
        per_example = {"similarity": similarity, "smoothness": smoothness}
        if self.dice_weight:
            soft_dice = self._soft_dice(batch, field)
            total = total + self.dice_weight * (1.0 - soft_dice)
            per_example["soft_dice"] = soft_dice
        if self.supervised_weight:
            error = jnp.square(field - self._true_field(batch))
            error = jnp.mean(error.reshape(error.shape[0], -1), -1)
            total = total + self.supervised_weight * error
            per_example["field_error"] = error
        total = jnp.where(valid, total, 0.0)
        per_example.update(self._metrics(field, batch))
        per_example["loss"] = total
        per_example = {k: jnp.where(valid, v, 0.0) for k, v in per_example.items()}
        return losses.masked_mean(total, valid), per_example

    def _dice_per_class(self, field, batch) -> jnp.ndarray:
        return registration_metrics.label_dice(
            batch["fixed_labels"], batch["moving_labels"], field, self.num_classes
        )

    def _tre(self, field, batch) -> jnp.ndarray:
        return registration_metrics.target_registration_error(
            field,
            batch["fixed_points"],
            batch["moving_points"],
            valid=batch["points_valid"],
            spacing=self.spacing,
        )

    def _metrics(self, field, batch) -> Batch:
        per_class = self._dice_per_class(field, batch)[:, 1:]
        metrics = {
            "dice": _nan_to_zero(jnp.nanmean(per_class, axis=-1)),
            "folding": 100.0 * registration_metrics.folding_fraction(field),
            "sd_log_jacobian": registration_metrics.std_log_jacobian(field),
        }
        if self.landmarks_key:
            errors, valid = self._tre(field, batch), batch["points_valid"]
            count = jnp.maximum(jnp.sum(valid, -1), 1)
            metrics["tre"] = jnp.sum(jnp.where(valid, errors, 0.0), -1) / count
        return metrics

    def host_outputs(self, outputs: Any, batch: Batch) -> Batch:
        """Label maps (whole), per-class Dice and landmark errors for split
        metrics; images, field and Jacobian determinant for the figures (in
        3D, the middle slice along the last axis)."""
        field = self.displacement(outputs, batch)
        warped = self.warp(batch["moving"], field)
        identity = jnp.zeros_like(field)
        result = {
            "fixed_labels": batch["fixed_labels"].astype(jnp.uint8),
            "moving_labels": batch["moving_labels"].astype(jnp.uint8),
            "warped_labels": registration_metrics.warp_labels(
                batch["moving_labels"], field
            ).astype(jnp.uint8),
            "dice_per_class": self._dice_per_class(field, batch),
            "initial_dice_per_class": self._dice_per_class(identity, batch),
        }
        if self.landmarks_key:
            result["tre_errors"] = self._tre(field, batch)
            result["initial_tre_errors"] = self._tre(identity, batch)
            result["points_valid"] = batch["points_valid"]
        images = {
            "fixed": batch["fixed"][..., 0],
            "moving": batch["moving"][..., 0],
            "warped": warped[..., 0],
            "field": field,
            "jacobian": jax.vmap(dense_fields.jacobian_determinant)(field),
        }
        if field.shape[-1] == 3:  # volumes: the middle axial slice for figures
            middle = field.shape[3] // 2
            images = {k: v[:, :, :, middle] for k, v in images.items()}
            images["field"] = images["field"][..., :2]
        result.update({f"figure_{k}": v for k, v in images.items()})
        return result

    # -- on the host -----------------------------------------------------------------

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        names = self.names
        result = {}
        for prefix in ("", "initial_"):
            per_class = np.asarray(host_outputs[f"{prefix}dice_per_class"])[:, 1:]
            with np.errstate(all="ignore"):
                per_pair = _nanmean_rows(per_class)
                result[f"{prefix}dice"] = _nanmean(per_pair)
                if not prefix:
                    for k in range(1, self.num_classes):
                        result[f"dice_{names[k]}"] = _nanmean(per_class[:, k - 1])
            if self.landmarks_key:
                errors = np.asarray(host_outputs[f"{prefix}tre_errors"])
                valid = np.asarray(host_outputs["points_valid"], bool)
                result[f"{prefix}tre"] = _nanmean(errors[valid])
        if self.hd95:
            classes = list(range(1, self.num_classes))
            hd = np.stack(
                [
                    registration_metrics.label_hd95(f, w, classes, self.spacing)
                    for f, w in zip(
                        host_outputs["fixed_labels"], host_outputs["warped_labels"]
                    )
                ]
            )
            hd = np.where(np.isinf(hd), np.nan, hd)  # a structure lost: Dice counts it
            result["hd95"] = _nanmean(_nanmean_rows(hd))
        return result

    def draw_cases(
        self, host_outputs: dict[str, np.ndarray], path: str, title: str = ""
    ) -> None:
        """Fixed / moving / warped with label contours, the deformation grid and
        the Jacobian determinant map (folds marked) of the first pairs."""
        from medjax.viz.registration import draw_registrations

        chosen = slice(0, self.num_figure_cases)
        labels = {
            k: host_outputs[k]
            for k in ("fixed_labels", "moving_labels", "warped_labels")
        }
        if labels["fixed_labels"].ndim == 4:
            middle = labels["fixed_labels"].shape[3] // 2
            labels = {k: v[:, :, :, middle] for k, v in labels.items()}
        dice = _nanmean_rows(np.asarray(host_outputs["dice_per_class"])[:, 1:])
        draw_registrations(
            host_outputs["figure_fixed"][chosen],
            host_outputs["figure_moving"][chosen],
            host_outputs["figure_warped"][chosen],
            labels["fixed_labels"][chosen],
            labels["moving_labels"][chosen],
            labels["warped_labels"][chosen],
            host_outputs["figure_field"][chosen],
            host_outputs["figure_jacobian"][chosen],
            path,
            dice=dice[chosen],
            title=title,
        )


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    counts = finite.sum(-1)
    sums = np.where(finite, values, 0.0).sum(-1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
