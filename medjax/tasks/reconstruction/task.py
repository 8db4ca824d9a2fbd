"""Autoencoding: reconstruction (plain, denoising, variational), anomaly detection
by reconstruction error, latent-code export, and greedy layer-wise pretraining
of stacked autoencoders.

The models (``medjax.models.autoencoder``) return a dict with ``reconstruction``
and ``latent`` (VAEs also ``mean`` and ``log_variance``); the tasks here turn it
into losses and metrics:

- :class:`ReconstructionTask`: per-example mean squared error against the clean
  image; ``denoising_std > 0`` corrupts the *inputs* of training batches with
  Gaussian noise (a denoising autoencoder, Vincent et al. 2008) while the target
  stays clean; a VAE's outputs add ``kl_weight`` times the KL divergence of its
  posterior from N(0, I).
- :class:`AnomalyTask`: the same training, to be run on healthy cases only
  (``medjax.data.datasets.phantoms.healthy.healthy_phantoms``, ``data=phantoms_healthy``); at
  evaluation the squared error is a per-pixel anomaly map and its high quantile
  inside the body a per-image score, whose AUROC and AUPRC for lesion against
  healthy are the split metrics.
"""

import dataclasses
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax import losses, metrics
from medjax.tasks.base import Batch

# The clean image a training step reconstructs (inputs may be corrupted).
TARGET_KEY = "reconstruction_target"


# --------------------------------------------------------------------------------------
# Per-example functions (device side)
# --------------------------------------------------------------------------------------


def reconstruction_error(
    reconstruction: jnp.ndarray, target: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Mean squared error per example over all voxels and channels.

    Args:
        reconstruction, target: ``[B, *S, C]``.
        mask: optional ``[B]`` bool, false for padded examples.

    Returns:
        ``[B]`` float32; exactly 0 where ``mask`` is false.
    """
    error = jnp.square(reconstruction.astype(jnp.float32) - target.astype(jnp.float32))
    per_example = jnp.mean(error.reshape(error.shape[0], -1), axis=1)
    return per_example if mask is None else jnp.where(mask, per_example, 0.0)


def kl_divergence(
    mean: jnp.ndarray, log_variance: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """KL(N(mean, exp(log_variance)) || N(0, I)) per example, in nats, summed
    over the latent dimensions:
    ``0.5 * sum(exp(log_variance) + mean**2 - 1 - log_variance)``.

    Args:
        mean, log_variance: ``[B, L]``.
        mask: optional ``[B]`` bool.

    Returns:
        ``[B]`` float32; 0 where ``mask`` is false.
    """
    mean, log_variance = mean.astype(jnp.float32), log_variance.astype(jnp.float32)
    per_dim = 0.5 * (jnp.exp(log_variance) + jnp.square(mean) - 1.0 - log_variance)
    per_example = jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=1)
    return per_example if mask is None else jnp.where(mask, per_example, 0.0)


def psnr(mse: jnp.ndarray, data_range: float = 2.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB of per-example ``mse [B]`` for images
    spanning ``data_range`` (2 for windowed CT in [-1, 1])."""
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10))


def gaussian_smooth(maps: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """``maps [B, *S]`` (2D or 3D) blurred by a Gaussian of ``sigma`` voxels,
    separably, the kernel truncated at 3 sigma (``scipy.ndimage.gaussian_filter``
    with ``mode="constant"``, ``truncate=3`` for integer sigma)."""
    if sigma <= 0:
        return maps
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), maps.dtype)
    ndim = maps.ndim - 1
    spec = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NHWDC", "HWDIO", "NHWDC")}[ndim]
    x = maps[..., None]
    for axis in range(ndim):
        shape = [1] * ndim + [1, 1]
        shape[axis] = len(taps)
        x = jax.lax.conv_general_dilated(
            x, taps.reshape(shape), (1,) * ndim, "SAME", dimension_numbers=spec
        )
    return x[..., 0]


def anomaly_maps(
    image: jnp.ndarray, reconstruction: jnp.ndarray, sigma: float = 0.0
) -> jnp.ndarray:
    """Per-voxel squared reconstruction error summed over channels, optionally
    Gaussian-smoothed (lesions are blobs, noise is not; normalised so that the
    borders are not dimmed): ``[B, *S]``."""
    error = jnp.sum(jnp.square(image.astype(jnp.float32) - reconstruction), axis=-1)
    if sigma <= 0:
        return error
    # Normalised convolution: the zero padding would otherwise dim the borders.
    return gaussian_smooth(error, sigma) / gaussian_smooth(jnp.ones_like(error[:1]), sigma)


def anomaly_scores(
    maps: jnp.ndarray, body: jnp.ndarray | None = None, quantile: float | None = None
) -> jnp.ndarray:
    """Per-image anomaly score ``[B]`` of ``maps [B, *S]``: the mean (``quantile``
    None) or the ``quantile`` of the map over the voxels where ``body [B, *S]``
    is true (all voxels when None, or when an image has no body voxel)."""
    flat = maps.reshape(maps.shape[0], -1)
    if body is None:
        inside = jnp.ones_like(flat, bool)
    else:
        inside = body.reshape(flat.shape)
        inside = inside | ~inside.any(axis=1, keepdims=True)
    if quantile is None:
        return jnp.sum(jnp.where(inside, flat, 0.0), 1) / jnp.sum(inside, 1)
    return jnp.nanquantile(jnp.where(inside, flat, jnp.nan), quantile, axis=1)


# --------------------------------------------------------------------------------------
# Split-level metrics (host side)
# --------------------------------------------------------------------------------------


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct
    score thresholds, highest first (tied scores enter together). NaN when there
    are no positives."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if not labels.any():
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReconstructionTask:
    """Train an autoencoder to reconstruct ``batch[image_key]``.

    Per example: ``mse`` (the reconstruction error against the clean image),
    ``psnr`` (dB, for the image range ``data_range``) and, for a VAE (outputs
    with ``mean`` and ``log_variance``), ``kl`` in nats. The loss is
    ``mse + kl_weight * kl / n`` with ``n`` the number of image elements: with
    ``kl_weight = 2 sigma**2`` it is the negative ELBO per element of a Gaussian
    decoder with variance ``sigma**2``, up to a constant (``kl_weight = 1`` is a
    decoder variance of 1/2, far above the phantoms' noise, which blurs; the
    configs use 0.01, a beta-VAE's beta relative to that).

    Attributes:
        image_key: batch field of the image ``[B, *S, C]``.
        denoising_std: standard deviation of the Gaussian noise added to training
            inputs (0: a plain autoencoder). Drawn in ``training_batch``, i.e.
            before on-device augmentation, which then moves the noisy input and
            the clean target together.
        kl_weight: beta of the KL term (VAE outputs only).
        data_range: intensity range of the images, for PSNR.
        num_figure_cases: cases drawn at each evaluation.
    """

    image_key: str = "image"
    denoising_std: float = 0.0
    kl_weight: float = 1.0
    data_range: float = 2.0
    num_figure_cases: int = 4

    primary_metric = "psnr"  # higher is better, like trainer.best_mode's default

    def __post_init__(self):
        if self.denoising_std < 0:
            raise ValueError(f"task.denoising_std: expected >= 0, got {self.denoising_std}")
        if self.kl_weight < 0:
            raise ValueError(f"task.kl_weight: expected >= 0, got {self.kl_weight}")
        if self.data_range <= 0:
            raise ValueError(f"task.data_range: expected > 0, got {self.data_range}")

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (self.image_key,)

    @property
    def augment_fields(self) -> dict[str, tuple]:
        # Only training batches are augmented, and they always carry the target.
        return {"images": (self.image_key, TARGET_KEY), "masks": (), "points": ()}

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def training_batch(self, key, batch: Batch) -> Batch:
        """Keeps the clean image as the target and, with ``denoising_std``,
        corrupts the input with N(0, denoising_std**2) noise."""
        clean = batch[self.image_key]
        noisy = clean
        if self.denoising_std > 0:
            noise = jax.random.normal(key, clean.shape, jnp.float32)
            noisy = (clean + self.denoising_std * noise).astype(clean.dtype)
        return {**batch, self.image_key: noisy, TARGET_KEY: clean}

    def per_example_losses(self, outputs: dict, batch: Batch) -> Batch:
        """``{loss, mse, psnr[, kl]}``, each ``[B]``."""
        if not isinstance(outputs, dict) or "reconstruction" not in outputs:
            raise ValueError(
                f"task: {type(self).__name__} needs a model that returns a dict with "
                f"'reconstruction' (model=autoencoder*, vae*), got "
                f"{type(outputs).__name__}"
            )
        valid = batch["valid"]
        target = batch.get(TARGET_KEY, batch[self.image_key])
        mse = reconstruction_error(outputs["reconstruction"], target, mask=valid)
        result = {"loss": mse, "mse": mse, "psnr": psnr(mse, self.data_range)}
        if "mean" in outputs and "log_variance" in outputs:
            kl = kl_divergence(outputs["mean"], outputs["log_variance"], mask=valid)
            result["kl"] = kl
            result["loss"] = mse + self.kl_weight * kl / np.prod(target.shape[1:])
        return result

    def loss(self, outputs: dict, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        per_example = self.per_example_losses(outputs, batch)
        return losses.masked_mean(per_example["loss"], batch["valid"]), per_example

    def host_outputs(self, outputs: dict, batch: Batch) -> Batch:
        return {
            "image": batch[self.image_key][..., 0],
            "reconstruction": outputs["reconstruction"][..., 0].astype(jnp.float32),
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {}  # mse, psnr and kl are means of the per-example metrics

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """The first cases: image, reconstruction, squared error."""
        count = min(self.num_figure_cases, len(host_outputs["image"]))
        image, reconstruction = host_outputs["image"][:count], host_outputs["reconstruction"][:count]
        draw_anomaly_cases(
            image, reconstruction, np.square(image - reconstruction), None, path,
            title=title,
        )


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
            raise ValueError(f"task.score_quantile: expected 0..1 or null, got {self.score_quantile}")
        if self.map_sigma < 0:
            raise ValueError(f"task.map_sigma: expected >= 0, got {self.map_sigma}")
        object.__setattr__(self, "region_labels", tuple(self.region_labels))
        if self.region_key is not None and not self.region_labels:
            raise ValueError("task.region_labels: expected the labels to score inside region_key")

    @property
    def batch_keys(self) -> tuple[str, ...]:
        region = (self.region_key,) if self.region_key else ()
        return (self.image_key, self.label_key, self.lesion_key) + region

    @property
    def augment_fields(self) -> dict[str, tuple]:
        return {**super().augment_fields, "masks": (self.lesion_key,)}

    def anomaly(self, image: jnp.ndarray, reconstruction: jnp.ndarray, region=None):
        """``(maps [B, *S], scores [B])`` of clean images ``[B, *S, C]``; with a
        label map ``region [B, *S]``, scored inside ``region_labels`` only."""
        maps = anomaly_maps(image, reconstruction, self.map_sigma)
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
        return maps, anomaly_scores(maps, body, self.score_quantile)

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
        return {
            "auroc": metrics.auroc(scores, lesion),
            "auprc": average_precision(scores, lesion),
            "score_healthy": float(scores[~lesion].mean()) if (~lesion).any() else float("nan"),
            "score_lesion": float(scores[lesion].mean()) if lesion.any() else float("nan"),
        }

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """Lesion cases first, then healthy ones: image, reconstruction, anomaly
        map and lesion mask, the lesion contoured in red, each titled with its
        score."""
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


def _axial(volume: np.ndarray, mask: np.ndarray | None) -> int:
    """The axial slice with the most lesion (the middle one without any)."""
    if mask is not None and mask.any():
        return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(0)))
    return volume.shape[-1] // 2


def draw_anomaly_cases(
    images: np.ndarray, reconstructions: np.ndarray, maps: np.ndarray,
    lesion_masks: np.ndarray | None, path: str, *, scores: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Writes a PNG, one row per case: image, reconstruction, anomaly map (its
    own colour scale per row) and, when given, the lesion mask; lesions are
    contoured in red on image and map. Inputs ``[N, *S]`` (volumes: the axial
    slice with the most lesion)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(images)
    columns = 3 + (lesion_masks is not None)
    fig, axes = plt.subplots(
        max(count, 1), columns, figsize=(2.2 * columns, 2.2 * max(count, 1) + 0.4), squeeze=False
    )
    names = ["image", "reconstruction", "anomaly map", "lesion mask"]
    for i in range(count):
        mask = None if lesion_masks is None else lesion_masks[i]
        panels = [images[i], reconstructions[i], maps[i]] + ([mask] if mask is not None else [])
        if images[i].ndim == 3:
            k = _axial(images[i], mask)
            panels = [p[..., k] for p in panels]
            mask = None if mask is None else mask[..., k]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if j < 2:
                ax.imshow(panel, cmap="gray", vmin=-1, vmax=1)
            elif j == 2:
                ax.imshow(panel, cmap="inferno", vmin=0, vmax=max(float(panel.max()), 1e-6))
            else:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            if mask is not None and mask.any() and j in (0, 2):
                ax.contour(mask > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.axis("off")
            if i == 0:
                ax.set_title(names[j], fontsize=8)
        if scores is not None:
            axes[i, 2].text(
                0.02, 0.02, f"score {float(scores[i]):.3g}", color="white", fontsize=7,
                transform=axes[i, 2].transAxes,
            )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Latent codes: export and a 2-D projection
# --------------------------------------------------------------------------------------


def pca_projection(latents: np.ndarray, num_components: int = 2):
    """Principal components of ``latents [N, L]`` by numpy SVD of the centred
    codes: ``(projection [N, k], explained_variance_ratio [k])``, components
    with a deterministic sign (largest loading positive)."""
    latents = np.asarray(latents, np.float64)
    centred = latents - latents.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(num_components, vt.shape[0])
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components = components * signs[:, None]
    projection = centred @ components.T
    if k < num_components:  # fewer codes or dimensions than components
        projection = np.pad(projection, ((0, 0), (0, num_components - k)))
    total = np.sum(singular**2)
    ratio = singular[:k] ** 2 / total if total > 0 else np.zeros(k)
    return projection, np.pad(ratio, (0, num_components - k))


def encode_split(
    model, variables: dict, data, split: str, *, image_key: str = "image",
    label_key: str | None = "label", batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[N, L]`` (the model's ``latent`` output at evaluation: a VAE's
    posterior mean) and labels ``[N]`` (zeros when ``label_key`` is None) of
    every example of ``data``'s ``split``, in order. Runs on the default device,
    in one process."""
    from medjax.data import pipeline

    keys = (image_key,) + ((label_key,) if label_key else ())
    apply = jax.jit(lambda x: model.apply(variables, x, train=False)["latent"])
    codes, labels = [], []
    for batch in pipeline.eval_batches(
        data.source(split), batch_size=batch_size or data.eval_batch_size,
        convert=data.convert, keys=keys, num_threads=data.num_threads,
    ):
        valid = batch["valid"]
        codes.append(np.asarray(apply(batch[image_key]))[valid])
        labels.append(batch[label_key][valid] if label_key else np.zeros(valid.sum(), int))
    codes = np.concatenate(codes).reshape(sum(len(c) for c in codes), -1)
    return codes, np.concatenate(labels)


def export_latents(
    model, variables: dict, data, split: str, out_dir: str, *, image_key: str = "image",
    label_key: str | None = "label", title: str = "",
) -> dict[str, np.ndarray]:
    """Encodes ``split`` and writes to ``out_dir``:

    - ``latents.npz``: ``latents [N, L]``, ``labels [N]``, ``projection [N, 2]``
      (PCA by numpy SVD, see :func:`pca_projection`) and
      ``explained_variance_ratio [2]``;
    - ``latents_pca.png``: the projection, coloured by label.

    Returns the arrays written.
    """
    latents, labels = encode_split(
        model, variables, data, split, image_key=image_key, label_key=label_key
    )
    projection, ratio = pca_projection(latents, 2)
    result = {
        "latents": latents, "labels": labels, "projection": projection,
        "explained_variance_ratio": ratio,
    }
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, "latents.npz"), **result)
    draw_projection(projection, labels, ratio, os.path.join(out_dir, "latents_pca.png"),
                    title=title or f"{split}: latent codes, PCA")
    return result


def draw_projection(projection, labels, ratio, path: str, *, title: str = "") -> None:
    """A scatter of ``projection [N, 2]`` with one colour per label value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    names = {0: "healthy", 1: "lesion"}
    for value in np.unique(labels):
        chosen = labels == value
        ax.scatter(projection[chosen, 0], projection[chosen, 1], s=9, alpha=0.7,
                   label=f"{names.get(int(value), f'label {value}')} ({chosen.sum()})")
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} % of variance)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Stacked autoencoder: greedy layer-wise pretraining, then end-to-end fine-tuning
# --------------------------------------------------------------------------------------


def _dense(params, x):
    return x @ params["kernel"] + params["bias"]


def _fit(loss_fn: Callable, params, data: jnp.ndarray, *, steps: int, batch_size: int,
         learning_rate: float, key) -> tuple[Any, list[float]]:
    """Adam on random minibatches of ``data [N, ...]``: ``(params, losses)``."""
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, key):
        rows = jax.random.choice(key, len(data), (min(batch_size, len(data)),), replace=False)
        loss, grads = jax.value_and_grad(loss_fn)(params, data[rows])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, history = tx.init(params), []
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        history.append(loss)
    return params, [float(v) for v in jax.device_get(history)]


def train_stacked_autoencoder(
    model, images: np.ndarray, *, pretrain_steps: int = 500, finetune_steps: int = 500,
    batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
) -> tuple[dict, dict[str, Any]]:
    """Greedy layer-wise pretraining of a ``StackedAutoencoder``, then end-to-end
    fine-tuning of the whole stack, on in-memory ``images [N, *S, C]``.

    Level ``k`` is the shallow autoencoder ``encoder_k`` -> ``decoder_k``. It is
    trained for ``pretrain_steps`` to reconstruct the codes of level ``k - 1``
    (the flattened images for level 0), which are fixed: computed once by the
    already-trained encoders. Each level thus learns a representation of the one
    below without gradients flowing through the stack (Bengio et al. 2007). The
    stacked encoders and decoders are then fine-tuned together on image
    reconstruction for ``finetune_steps``. Both phases use Adam on random
    minibatches in a small jitted loop of their own: the shallow levels are not
    models the training engine knows, and the data fits in memory. (Training the
    stack end to end from scratch is ``medjax-train model=autoencoder_stacked``.)

    Returns:
        ``({"params": ...}`` for ``model.apply``, ``history)``, history holding
        ``pretrain_losses`` (one list per level), ``finetune_losses``, and the
        whole stack's image ``mse_after_pretraining`` and
        ``mse_after_finetuning``.
    """
    images = jnp.asarray(images, jnp.float32)
    key = jax.random.key(seed)
    params = dict(model.init(jax.random.fold_in(key, 0), images[:1], train=False)["params"])
    codes = images.reshape(len(images), -1)
    pretrain_losses = []
    for k in range(model.depth):
        def level_loss(level, x, k=k):
            hidden = model.layer_activation(k, _dense(level["encoder"], x))
            out = _dense(level["decoder"], hidden)
            out = jax.nn.relu(out) if k > 0 else out
            return jnp.mean(jnp.square(out - x))

        level = {"encoder": params[f"encoder_{k}"], "decoder": params[f"decoder_{k}"]}
        level, history = _fit(
            level_loss, level, codes, steps=pretrain_steps, batch_size=batch_size,
            learning_rate=learning_rate, key=jax.random.fold_in(key, 1 + k),
        )
        params[f"encoder_{k}"], params[f"decoder_{k}"] = level["encoder"], level["decoder"]
        pretrain_losses.append(history)
        codes = model.layer_activation(k, _dense(level["encoder"], codes))

    def stack_mse(p, x):
        return jnp.mean(jnp.square(model.apply({"params": p}, x, train=True)["reconstruction"] - x))

    whole = jax.jit(stack_mse)
    after_pretraining = float(whole(params, images))
    params, finetune_losses = _fit(
        stack_mse, params, images, steps=finetune_steps, batch_size=batch_size,
        learning_rate=learning_rate, key=jax.random.fold_in(key, 1000),
    )
    return {"params": params}, {
        "pretrain_losses": pretrain_losses,
        "finetune_losses": finetune_losses,
        "mse_after_pretraining": after_pretraining,
        "mse_after_finetuning": float(whole(params, images)),
    }


__all__: Sequence[str] = (
    "TARGET_KEY", "ReconstructionTask", "AnomalyTask", "reconstruction_error",
    "kl_divergence", "psnr", "gaussian_smooth", "anomaly_maps", "anomaly_scores",
    "average_precision", "draw_anomaly_cases", "pca_projection", "encode_split",
    "export_latents", "draw_projection", "train_stacked_autoencoder",
)
