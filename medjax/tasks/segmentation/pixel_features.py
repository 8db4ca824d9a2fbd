"""Per-pixel feature vectors of 2D images, for pixel-wise classifiers.

Three representations of the pixels of an image ``[H, W]``, each a feature
vector per pixel that any per-pixel classifier (logistic regression, a small MLP)
can take, the classic alternative to a fully convolutional network:

- :func:`image_patches`: the raw intensities of the ``size x size`` window
  centred on each pixel, flattened (row-major);
- :func:`handcrafted_features`: hand-designed filters from scikit-image
  (``skimage.feature.multiscale_basic_features``: Gaussian-smoothed intensity,
  gradient magnitude and Hessian eigenvalues at several scales), optionally with
  local histograms of uniform local binary patterns
  (``skimage.feature.local_binary_pattern``);
- :func:`autoencoder_codes`: the code of a ``StackedAutoencoder``
  (``medjax.models.autoencoder``) of each pixel's patch, learnt without labels
  (``medjax.engine.pretraining.train_stacked_autoencoder`` on patches from
  :func:`sample_patches`).

Borders: patches read outside the image by mirroring it (scipy's
``mode="reflect"``, ``d c b a | a b c d``, numpy's ``"symmetric"``; other
``numpy.pad`` modes on request); the hand-designed filters repeat the edge pixel
(``a a a | a b c d``), scikit-image's Gaussian default ``mode="nearest"``, which
the LBP histograms follow.

Host side (numpy, scikit-image), except the autoencoder codes (jitted).
"""

import jax
import numpy as np
import scipy.ndimage as ndi
from skimage.feature import local_binary_pattern, multiscale_basic_features

#: numpy's name for scipy's and scikit-image's ``mode="reflect"``.
PAD_MODE = "symmetric"


def image_patches(image: np.ndarray, size: int, *, pad_mode: str = PAD_MODE):
    """The ``size x size`` window centred on every pixel, flattened.

    Args:
        image: ``[H, W]`` intensities.
        size: odd window side.
        pad_mode: ``numpy.pad`` mode of the border (default: mirror, as scipy's
            ``"reflect"``); ``"constant"`` pads with zeros, ``"edge"`` repeats.

    Returns:
        ``[H * W, size * size]`` float32, row ``i * W + j`` the window of pixel
        ``(i, j)``, i.e. ``padded[i : i + size, j : j + size].ravel()`` where
        ``padded`` is ``image`` padded by ``size // 2`` on every side.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"image_patches: expected an image [H, W], got {image.shape}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"image_patches: expected an odd size >= 1, got {size}")
    padded = np.pad(image, size // 2, mode=pad_mode)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
    return windows.reshape(image.size, size * size)


def sample_patches(
    images: np.ndarray,
    size: int,
    count: int,
    rng: np.random.Generator,
    *,
    pad_mode: str = PAD_MODE,
) -> np.ndarray:
    """``count`` windows around pixels drawn uniformly from a stack of images
    (with replacement over images and positions): training data for an
    autoencoder of patches.

    Args:
        images: ``[N, H, W]``.
        size: odd window side.
        count: how many patches.
        rng: numpy generator drawing the image index and the pixel.
        pad_mode: as in :func:`image_patches`.

    Returns:
        ``[count, size * size]`` float32 rows of :func:`image_patches`.
    """
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    which = rng.integers(0, n, count)
    pixels = rng.integers(0, h * w, count)
    half = size // 2
    padded = np.pad(images, ((0, 0), (half, half), (half, half)), mode=pad_mode)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), (1, 2))
    rows, cols = np.divmod(pixels, w)
    return windows[which, rows, cols].reshape(count, size * size)


def num_handcrafted_channels(
    *,
    intensity: bool = True,
    edges: bool = True,
    texture: bool = True,
    sigma_min: float = 0.5,
    sigma_max: float = 16.0,
    num_sigma: int | None = None,
    lbp: tuple[tuple[int, float], ...] = (),
) -> int:
    """Channels of :func:`handcrafted_features` with the same options (2D):
    ``num_sigma * (intensity + edges + 2 texture) + sum(P + 2 for P, R in lbp)``,
    ``num_sigma`` defaulting, as in scikit-image, to
    ``int(log2(sigma_max / sigma_min)) + 1`` (6 for 0.5 to 16)."""
    if num_sigma is None:
        num_sigma = int(np.log2(sigma_max) - np.log2(sigma_min) + 1)
    per_sigma = int(intensity) + int(edges) + 2 * int(texture)
    return num_sigma * per_sigma + sum(points + 2 for points, _ in lbp)


def handcrafted_features(
    image: np.ndarray,
    *,
    intensity: bool = True,
    edges: bool = True,
    texture: bool = True,
    sigma_min: float = 0.5,
    sigma_max: float = 16.0,
    num_sigma: int | None = None,
    lbp: tuple[tuple[int, float], ...] = (),
    lbp_sigma: float = 2.0,
    workers: int | None = 1,
) -> np.ndarray:
    """Hand-designed features of every pixel: scikit-image's multi-scale basic
    features, then optional local binary pattern histograms.

    ``multiscale_basic_features`` smooths the image by Gaussians of ``num_sigma``
    widths from ``sigma_min`` to ``sigma_max`` (log-spaced, pixels) and gives per
    width, in this order: the smoothed intensity (``intensity``), its Sobel
    gradient magnitude (``edges``) and the two eigenvalues of its Hessian
    (``texture``). Each ``(P, R)`` of ``lbp`` adds the uniform, rotation-invariant
    LBP of ``P`` neighbours at radius ``R`` (``method="uniform"``: codes
    ``0 .. P + 1``) as ``P + 2`` channels: the one-hot code smoothed by a Gaussian
    of ``lbp_sigma`` pixels, i.e. a Gaussian-weighted local histogram of the codes.
    LBP reads the image as 8-bit grey levels (its range scaled to 0..255), as
    scikit-image recommends.

    Args:
        image: ``[H, W]`` intensities (e.g. CT windowed to [-1, 1]).
        intensity, edges, texture, sigma_min, sigma_max, num_sigma: passed to
            ``skimage.feature.multiscale_basic_features``.
        lbp: ``(points, radius)`` pairs; empty: no LBP channels.
        lbp_sigma: width of the histogram window of the LBP codes, pixels.
        workers: threads of ``multiscale_basic_features`` (None: all cores).

    Returns:
        ``[H, W, C]`` float32, ``C`` = :func:`num_handcrafted_channels`.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 2:
        raise ValueError(
            f"handcrafted_features: expected an image [H, W], got {image.shape}"
        )
    channels = [
        multiscale_basic_features(
            image,
            intensity=intensity,
            edges=edges,
            texture=texture,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            num_sigma=num_sigma,
            workers=workers,
        )
    ]
    if lbp:
        grey = _as_uint8(image)
        for points, radius in lbp:
            codes = local_binary_pattern(grey, points, radius, method="uniform")
            channels.append(_local_histogram(codes.astype(int), points + 2, lbp_sigma))
    return np.concatenate(channels, axis=-1).astype(np.float32)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` with its range scaled to the integers 0..255."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.round(scaled * 255).astype(np.uint8)


def _local_histogram(codes: np.ndarray, bins: int, sigma: float) -> np.ndarray:
    """``[H, W, bins]``: each code's indicator smoothed by a Gaussian (edge pixels
    repeated outside), so every pixel's channels sum to 1."""
    one_hot = (codes[..., None] == np.arange(bins)).astype(np.float32)
    return ndi.gaussian_filter(one_hot, sigma=(sigma, sigma, 0), mode="nearest")


def autoencoder_codes(
    model, variables, patches: np.ndarray, *, batch_size: int = 8192
) -> np.ndarray:
    """The code (``latent``) of a ``StackedAutoencoder`` for each patch.

    Args:
        model: a ``medjax.models.autoencoder.StackedAutoencoder`` initialised on
            inputs ``[B, D, 1]`` (flattened patches with a channel axis).
        variables: its ``{"params": ...}`` (e.g. from
            ``train_stacked_autoencoder``).
        patches: ``[N, D]`` flattened patches (rows of :func:`image_patches`).
        batch_size: rows per jitted call (the last one is padded to the same
            shape, so there is one compilation).

    Returns:
        ``[N, L]`` float32, ``L = model.hidden[-1]``: a function of ``variables``
        and ``patches`` alone (evaluation mode, no randomness).
    """
    patches = np.asarray(patches, np.float32)
    encode = jax.jit(
        lambda variables, x: model.apply(variables, x[..., None], train=False)["latent"]
    )
    codes = [np.zeros((0, model.hidden[-1]), np.float32)]
    for start in range(0, len(patches), batch_size):
        chunk = patches[start : start + batch_size]
        padded = np.zeros((min(batch_size, len(patches)), patches.shape[1]), np.float32)
        padded[: len(chunk)] = chunk
        codes.append(np.asarray(encode(variables, padded))[: len(chunk)])
    return np.concatenate(codes)
