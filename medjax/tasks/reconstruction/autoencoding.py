"""Reconstruction: plain, denoising and variational autoencoders.

The models (``medjax.models.autoencoder``) return a dict with ``reconstruction``
and ``latent`` (VAEs also ``mean`` and ``log_variance``); the task turns it into
losses (``medjax.losses.reconstruction``) and metrics
(``medjax.metrics.reconstruction``). Latent codes are exported by
``medjax.inferers.latents``; greedy layer-wise pretraining of a stacked
autoencoder is ``medjax.engine.pretraining.train_stacked_autoencoder``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from medjax import losses, metrics
from medjax.data import schema as roles
from medjax.ops.noise import coarse_noise
from medjax.tasks.base import Batch, Task

# The clean image a step reconstructs (the inputs may be corrupted).
TARGET_KEY = "reconstruction_target"


@dataclasses.dataclass(frozen=True)
class ReconstructionTask(Task):
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
            inputs (0: a plain autoencoder). Drawn in ``prepare_batch``, i.e.
            before on-device augmentation, which then moves the noisy input and
            the clean target together (``batch_roles`` gives the target the image
            role).
        noise_resolution: None: the noise is white (i.i.d. per voxel); a
            number of grid points per axis: coarse noise
            (:func:`medjax.ops.noise.coarse_noise`, Kascenas et al. 2022),
            drawn on that grid with ``denoising_std`` and upsampled linearly.
        kl_weight: beta of the KL term (VAE outputs only).
        data_range: intensity range of the images, for PSNR.
        num_figure_cases: cases drawn at each evaluation.
    """

    image_key: str = "image"
    denoising_std: float = 0.0
    noise_resolution: int | None = None
    kl_weight: float = 1.0
    data_range: float = 2.0
    num_figure_cases: int = 4

    primary_metric = "psnr"  # higher is better, like trainer.best_mode's default

    def __post_init__(self):
        if self.denoising_std < 0:
            raise ValueError(f"task.denoising_std: expected >= 0, got {self.denoising_std}")
        if self.noise_resolution is not None and self.noise_resolution < 1:
            raise ValueError(
                f"task.noise_resolution: expected >= 1 or null, got {self.noise_resolution}"
            )
        if self.kl_weight < 0:
            raise ValueError(f"task.kl_weight: expected >= 0, got {self.kl_weight}")
        if self.data_range <= 0:
            raise ValueError(f"task.data_range: expected > 0, got {self.data_range}")

    def needs(self) -> dict[str, str]:
        return {self.image_key: roles.IMAGE}

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        """Adds the clean image as ``TARGET_KEY`` and, in training with
        ``denoising_std``, corrupts the input with N(0, denoising_std**2) noise,
        white or coarse (``noise_resolution``)."""
        clean = batch[self.image_key]
        noisy = clean
        if train and self.denoising_std > 0:
            if self.noise_resolution is None:
                noise = jax.random.normal(key, clean.shape, jnp.float32)
            else:
                noise = coarse_noise(key, clean.shape, self.noise_resolution)
            noisy = (clean + self.denoising_std * noise).astype(clean.dtype)
        return {**batch, self.image_key: noisy, TARGET_KEY: clean}

    def batch_roles(self) -> roles.Schema:
        # The target after the data's fields: augmentation draws intensity
        # changes per image field in schema order, input first (as before).
        return self.field_roles() + ((TARGET_KEY, roles.image()),)

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def per_example_losses(self, outputs: dict, batch: Batch) -> Batch:
        """``{loss, mse, psnr[, kl]}``, each ``[B]``, of a prepared batch."""
        if not isinstance(outputs, dict) or "reconstruction" not in outputs:
            raise ValueError(
                f"task: {type(self).__name__} needs a model that returns a dict with "
                f"'reconstruction' (model=*autoencoder*, vae*), got "
                f"{type(outputs).__name__}"
            )
        valid = batch["valid"]
        target = batch[TARGET_KEY]
        mse = losses.reconstruction_error(outputs["reconstruction"], target, mask=valid)
        result = {"loss": mse, "mse": mse, "psnr": metrics.psnr(mse, self.data_range)}
        if "mean" in outputs and "log_variance" in outputs:
            kl = losses.kl_divergence(outputs["mean"], outputs["log_variance"], mask=valid)
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

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str = "") -> None:
        """The first cases: image, reconstruction, squared error."""
        from medjax.viz.reconstruction import draw_anomaly_cases  # matplotlib only here

        count = min(self.num_figure_cases, len(host_outputs["image"]))
        image = host_outputs["image"][:count]
        reconstruction = host_outputs["reconstruction"][:count]
        draw_anomaly_cases(
            image, reconstruction, np.square(image - reconstruction), None, path,
            title=title,
        )
