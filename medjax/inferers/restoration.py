"""Restoration-based anomaly maps (Chen et al., "Unsupervised lesion detection
via image restoration with a normative prior", MIDL 2019 / MedIA 2020): move
the input by gradient steps toward an image the autoencoder, trained on healthy
anatomy only, reconstructs well, while keeping it close to the input; what had
to change is the anomaly."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from medjax.losses import kl_divergence


def restoration_energy(
    apply: Callable, x: jnp.ndarray, original: jnp.ndarray, inside: jnp.ndarray,
    weight: float, kl_weight: float = 0.0,
) -> jnp.ndarray:
    """Per-image energy ``[B]``: the squared reconstruction error of ``x`` plus
    ``weight`` times its L1 distance to ``original``, summed over the voxels of
    ``inside [B, *S]``; for a VAE (outputs with ``mean`` and ``log_variance``)
    plus ``kl_weight`` times the KL of its posterior (the ELBO's prior term)."""
    outputs = apply(x)
    inside = inside[..., None].astype(x.dtype)
    error = jnp.square(x - outputs["reconstruction"].astype(x.dtype)) * inside
    distance = jnp.abs(x - original) * inside
    axes = tuple(range(1, x.ndim))
    energy = jnp.sum(error, axes) + weight * jnp.sum(distance, axes)
    if kl_weight and "mean" in outputs and "log_variance" in outputs:
        energy = energy + kl_weight * kl_divergence(outputs["mean"], outputs["log_variance"])
    return energy


def restore(
    apply: Callable,
    image: jnp.ndarray,
    inside: jnp.ndarray,
    *,
    steps: int,
    step_size: float,
    weight: float,
    kl_weight: float = 0.0,
) -> jnp.ndarray:
    """The restored image ``[B, *S, C]``: ``steps`` gradient steps of size
    ``step_size`` on :func:`restoration_energy`, from ``image``, changing only
    the voxels of ``inside [B, *S]`` (boolean).

    Args:
        apply: the autoencoder in inference mode, images to its output dict.
        image: ``[B, *S, C]``.
        inside: ``[B, *S]`` voxels allowed to change (e.g. the body).
        steps, step_size: plain gradient descent (the energy is a sum over
            voxels, so the step is in intensity units per unit gradient).
        weight: of the L1 term keeping the restoration near the input.
        kl_weight: of a VAE's KL term (0: none).
    """
    image = image.astype(jnp.float32)
    mask = inside[..., None].astype(jnp.float32)

    def fidelity(x):  # the energy without its L1 term
        return jnp.sum(restoration_energy(apply, x, image, inside, 0.0, kl_weight))

    def step(x, _):
        # The L1 term's subgradient taken as 0 where x is the input (jnp.abs's
        # gradient there is 1, which would push every voxel at the first step).
        gradient = jax.grad(fidelity)(x) + weight * jnp.sign(x - image)
        return x - step_size * mask * gradient, None

    restored, _ = jax.lax.scan(step, image, None, length=steps)
    return restored
