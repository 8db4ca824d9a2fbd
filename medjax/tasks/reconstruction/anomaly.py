"""Anomaly detection by reconstruction error: an autoencoder trained on healthy
cases only (``medjax.data.datasets.phantoms.healthy.healthy_phantoms``,
``data=phantoms_healthy``); at evaluation the squared error of the
reconstruction (or of a restoration, ``restoration_steps``) is a per-pixel
anomaly map and its high quantile inside the body a per-image score. Split
metrics: the scores' AUROC and AUPRC for lesion against healthy, and the maps'
pixel-level AUROC, AUPRC and best Dice against the lesion masks
(:mod:`medjax.metrics.anomaly`)."""

import dataclasses

import jax.numpy as jnp
import numpy as np

from medjax import metrics
from medjax.data import schema as roles
from medjax.inferers.restoration import restore
from medjax.metrics.anomaly import pixel_metrics
from medjax.tasks.base import Batch, warn_nonfinite_scores
from medjax.tasks.reconstruction.autoencoding import ReconstructionTask


@dataclasses.dataclass(frozen=True)
class AnomalyTask(ReconstructionTask):
    """Reconstruction-based anomaly detection: an autoencoder trained on healthy
    cases (the data's train split must hold only those: ``data=phantoms_healthy``)
    reconstructs healthy anatomy and fails on what it never saw.

    At evaluation, per image: the anomaly map is the squared error, smoothed by
    a Gaussian of ``map_sigma`` pixels; the score is its ``score_quantile``
    (None: mean) over the body, the voxels whose input exceeds
    ``body_threshold`` (None: all voxels; windowed CT air is -1). Over a split:
    ``auroc`` and ``auprc`` of the score for lesion against healthy
    (:meth:`image_truth`), and ``score_healthy`` / ``score_lesion``, the mean scores; over
    the voxels scored (the body, or the region), pooled: ``pixel_auroc``,
    ``pixel_auprc``, ``best_dice`` (⌈Dice⌉) and ``best_dice_threshold`` of the
    maps against the lesion masks (:func:`medjax.metrics.anomaly.pixel_metrics`).
    The best checkpoint is picked by validation AUROC, which uses the
    validation labels.

    With ``restoration_steps`` > 0 the map is that of the restored image
    (:func:`medjax.inferers.restoration.restore`, inside the body) rather than
    of the reconstruction.

    Attributes (besides :class:`ReconstructionTask`'s):
        label_key: batch field of the image label (0 healthy, > 0 lesion).
        lesion_key: batch field of the lesion mask ``[B, *S]`` (drawn only).
        map_sigma: smoothing of the anomaly map, in pixels (0: none).
        score_quantile: quantile of the map over the body giving the score.
        body_threshold: inputs above it are body.
        region_key / region_labels: score only inside the voxels whose
            ``batch[region_key]`` (a label map ``[B, *S]``, e.g. the phantoms'
            ``organ_mask``) holds one of ``region_labels`` (e.g. the liver and
            lungs, where the lesions are), within the body; images without such
            voxels are scored over the body.
        median_filter: median filter of the maps before the pixel metrics, in
            voxels per axis (0: none).
        min_component: connected components of fewer voxels are removed from
            every thresholded segmentation (0: none).
        dice_threshold: also report ``dice``, the Dice of the maps at this
            threshold (e.g. a validation's ``best_dice_threshold``, on test).
        restoration_steps, restoration_step_size, restoration_weight: gradient
            steps of the restoration, their size and the weight of its L1
            distance to the input (0 steps: score the reconstruction).
    """

    label_key: str = "label"
    lesion_key: str = "lesion_mask"
    map_sigma: float = 1.0
    score_quantile: float | None = 0.99
    body_threshold: float | None = -0.95
    region_key: str | None = None
    region_labels: tuple[int, ...] = ()
    median_filter: int = 0
    min_component: int = 0
    dice_threshold: float | None = None
    restoration_steps: int = 0
    restoration_step_size: float = 0.1
    restoration_weight: float = 0.1

    primary_metric = "auroc"

    def __post_init__(self):
        super().__post_init__()
        if self.score_quantile is not None and not 0.0 <= self.score_quantile <= 1.0:
            raise ValueError(
                f"task.score_quantile: expected 0..1 or null, got {self.score_quantile}"
            )
        if self.map_sigma < 0:
            raise ValueError(f"task.map_sigma: expected >= 0, got {self.map_sigma}")
        object.__setattr__(self, "region_labels", tuple(self.region_labels))
        if self.region_key is not None and not self.region_labels:
            raise ValueError("task.region_labels: expected the labels to score inside region_key")
        for name in ("median_filter", "min_component", "restoration_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"task.{name}: expected >= 0, got {getattr(self, name)}")

    def needs(self) -> dict[str, str]:
        # A lesion mask of instance ids meets the label_map need (base.missing_roles).
        fields = {
            self.image_key: roles.IMAGE,
            self.label_key: roles.CLASS_LABEL,
            self.lesion_key: roles.LABEL_MAP,
        }
        if self.region_key:
            fields[self.region_key] = roles.LABEL_MAP
        return fields

    def body(self, image: jnp.ndarray) -> jnp.ndarray | None:
        """The body ``[B, *S]`` of images ``[B, *S, C]`` (None: no threshold)."""
        if self.body_threshold is None:
            return None
        return jnp.max(image, axis=-1) > self.body_threshold

    def predict(self, apply, inputs):
        outputs = apply(inputs)
        if self.restoration_steps == 0:
            return outputs
        body = self.body(inputs)
        inside = jnp.ones(inputs.shape[:-1], bool) if body is None else body
        restored = restore(
            apply, inputs, inside, steps=self.restoration_steps,
            step_size=self.restoration_step_size, weight=self.restoration_weight,
            kl_weight=self.kl_weight,
        )
        return {**outputs, "restored": restored}

    def scored_voxels(self, image: jnp.ndarray, region=None) -> jnp.ndarray | None:
        """The voxels scored ``[B, *S]`` of images ``[B, *S, C]``: the body; with
        a label map ``region [B, *S]``, its voxels of ``region_labels`` within
        the body (the body, for an image without such voxels); None: all."""
        body = self.body(image)
        if region is None:
            return body
        inside = jnp.isin(region, jnp.asarray(self.region_labels))
        if body is not None:
            inside = inside & body
        has_region = inside.reshape(inside.shape[0], -1).any(axis=1)
        has_region = has_region.reshape((-1,) + (1,) * (inside.ndim - 1))
        return jnp.where(has_region, inside, body if body is not None else True)

    def score_maps(self, maps: jnp.ndarray, image: jnp.ndarray, region=None):
        """``(scores [B], inside [B, *S])`` of anomaly ``maps [B, *S]`` of any
        method: the per-image score over the voxels scored, and those voxels."""
        inside = self.scored_voxels(image, region)
        scores = metrics.anomaly_scores(maps, inside, self.score_quantile)
        if inside is None:
            inside = jnp.ones(maps.shape, bool)
        return scores, inside

    def anomaly(self, image: jnp.ndarray, reconstruction: jnp.ndarray, region=None):
        """``(maps, scores, inside)`` of clean images ``[B, *S, C]``: the
        smoothed squared error ``[B, *S]`` and :meth:`score_maps` of it."""
        maps = metrics.anomaly_maps(image, reconstruction, self.map_sigma)
        return (maps, *self.score_maps(maps, image, region))

    def host_outputs(self, outputs: dict, batch: Batch) -> Batch:
        image = batch[self.image_key]
        region = batch[self.region_key] if self.region_key else None
        compared = outputs["restored"] if "restored" in outputs else outputs["reconstruction"]
        maps, scores, inside = self.anomaly(image, compared, region)
        return {
            "score": scores,
            "label": batch[self.label_key],
            "image": image[..., 0],
            # the restoration when there is one: what the map compares
            "reconstruction": compared[..., 0].astype(jnp.float32),
            "anomaly_map": maps,
            "lesion_mask": (batch[self.lesion_key] > 0).astype(jnp.uint8),
            "inside": inside.astype(jnp.uint8),
        }

    def image_truth(self, host_outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Which images count as lesion-bearing ``[N]``: ``label > 0``; scored
        inside a region, those with a lesion voxel among the voxels scored (a
        slice whose only lesion lies outside the region is healthy there)."""
        if self.region_key is None:
            return np.asarray(host_outputs["label"]) > 0
        found = (np.asarray(host_outputs["lesion_mask"]) > 0) & (
            np.asarray(host_outputs["inside"]) > 0
        )
        return found.reshape(len(found), -1).any(axis=1)

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        scores = np.asarray(host_outputs["score"], np.float64)
        lesion = self.image_truth(host_outputs)
        warn_nonfinite_scores(scores, "anomaly scores", "auroc and auprc")
        pixels = pixel_metrics(
            host_outputs["anomaly_map"], host_outputs["lesion_mask"] > 0,
            host_outputs["inside"] > 0, median_size=self.median_filter,
            min_component=self.min_component, threshold=self.dice_threshold,
        )
        return {
            **pixels,
            "auroc": metrics.auroc(scores, lesion),
            "auprc": metrics.average_precision(scores, lesion),
            "score_healthy": float(scores[~lesion].mean()) if (~lesion).any() else float("nan"),
            "score_lesion": float(scores[lesion].mean()) if lesion.any() else float("nan"),
        }

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """Lesion cases first, then healthy ones: image, reconstruction, anomaly
        map and lesion mask, the lesion contoured in red, each titled with its
        score."""
        from medjax.viz.reconstruction import draw_anomaly_cases  # matplotlib only here

        lesion = np.asarray(host_outputs["label"]) > 0
        healthy_shown = max(1, self.num_figure_cases // 4)
        order = np.concatenate([
            np.flatnonzero(lesion)[: self.num_figure_cases - healthy_shown],
            np.flatnonzero(~lesion),
        ])[: self.num_figure_cases]
        draw_anomaly_cases(
            host_outputs["image"][order], host_outputs["reconstruction"][order],
            host_outputs["anomaly_map"][order], host_outputs["lesion_mask"][order], path,
            scores=host_outputs["score"][order], title=title,
        )
