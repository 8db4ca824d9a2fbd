"""Anomaly detection by reconstruction error: an autoencoder trained on healthy
cases only (``medjax.data.datasets.phantoms.healthy.healthy_phantoms``,
``data=phantoms_healthy``); at evaluation the squared error is a per-pixel anomaly
map and its high quantile inside the body a per-image score, whose AUROC and
AUPRC for lesion against healthy are the split metrics."""

import dataclasses

import jax.numpy as jnp
import numpy as np

from medjax import metrics
from medjax.data import schema as roles
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
    ``auroc`` and ``auprc`` of the score for ``label > 0`` (lesion) against
    healthy, and ``score_healthy`` / ``score_lesion``, the mean scores. The best
    checkpoint is picked by validation AUROC, which uses the validation labels.

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
    """

    label_key: str = "label"
    lesion_key: str = "lesion_mask"
    map_sigma: float = 1.0
    score_quantile: float | None = 0.99
    body_threshold: float | None = -0.95
    region_key: str | None = None
    region_labels: tuple[int, ...] = ()

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

    def anomaly(self, image: jnp.ndarray, reconstruction: jnp.ndarray, region=None):
        """``(maps [B, *S], scores [B])`` of clean images ``[B, *S, C]``; with a
        label map ``region [B, *S]``, scored inside ``region_labels`` only."""
        maps = metrics.anomaly_maps(image, reconstruction, self.map_sigma)
        body = None
        if self.body_threshold is not None:
            body = jnp.max(image, axis=-1) > self.body_threshold
        if region is not None:
            inside = jnp.isin(region, jnp.asarray(self.region_labels))
            if body is not None:
                inside = inside & body
            has_region = inside.reshape(inside.shape[0], -1).any(axis=1)
            has_region = has_region.reshape((-1,) + (1,) * (inside.ndim - 1))
            body = jnp.where(has_region, inside, body if body is not None else True)
        return maps, metrics.anomaly_scores(maps, body, self.score_quantile)

    def host_outputs(self, outputs: dict, batch: Batch) -> Batch:
        image = batch[self.image_key]
        region = batch[self.region_key] if self.region_key else None
        maps, scores = self.anomaly(image, outputs["reconstruction"], region)
        return {
            "score": scores,
            "label": batch[self.label_key],
            "image": image[..., 0],
            "reconstruction": outputs["reconstruction"][..., 0].astype(jnp.float32),
            "anomaly_map": maps,
            "lesion_mask": (batch[self.lesion_key] > 0).astype(jnp.uint8),
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        scores = np.asarray(host_outputs["score"], np.float64)
        lesion = np.asarray(host_outputs["label"]) > 0
        warn_nonfinite_scores(scores, "anomaly scores", "auroc and auprc")
        return {
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
