"""Coarse noise: its spectrum lies below the coarse grid's Nyquist frequency."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.ops.noise import coarse_noise
from medjax.runtime import random_key


def _power_below(noise: np.ndarray, cutoff: float) -> float:
    """Share of the power of ``noise [B, H, W]`` at frequencies of at most
    ``cutoff`` cycles per image side on both axes."""
    power = np.mean(np.abs(np.fft.fft2(noise)) ** 2, axis=0)
    rows = np.abs(np.fft.fftfreq(noise.shape[1]) * noise.shape[1])
    cols = np.abs(np.fft.fftfreq(noise.shape[2]) * noise.shape[2])
    inside = (rows[:, None] <= cutoff) & (cols[None, :] <= cutoff)
    return float(power[inside].sum() / power.sum())


def test_power_is_concentrated_below_the_coarse_grids_nyquist_frequency():
    noise = np.asarray(coarse_noise(random_key(0), (128, 64, 64, 1), 16))[..., 0]
    # 16 grid points: Nyquist 8 cycles per side; the box holds 17^2 / 64^2 = 7%
    # of the frequencies but 90% of the power (linear interpolation leaks the rest).
    assert _power_below(noise, 8) > 0.88
    white = np.random.default_rng(0).standard_normal((128, 64, 64))
    assert _power_below(white, 8) == pytest.approx(17**2 / 64**2, abs=0.01)
    # A coarser grid: lower frequencies still.
    coarser = np.asarray(coarse_noise(random_key(1), (128, 64, 64, 1), 8))[..., 0]
    assert _power_below(coarser, 4) > 0.88


def test_the_grid_values_have_the_requested_std_and_images_differ():
    # Resolution equal to the size: no interpolation, i.i.d. N(0, std^2) values.
    noise = coarse_noise(random_key(2), (8, 32, 32, 2), 32, std=0.3)
    assert float(jnp.std(noise)) == pytest.approx(0.3, rel=0.03)
    assert not np.allclose(noise[0], noise[1]) and not np.allclose(noise[..., 0], noise[..., 1])
    volume = coarse_noise(random_key(3), (2, 8, 12, 16, 1), (2, 3, 4))
    assert volume.shape == (2, 8, 12, 16, 1)
    with pytest.raises(ValueError, match="resolution"):
        coarse_noise(random_key(0), (1, 8, 8, 1), 16)
