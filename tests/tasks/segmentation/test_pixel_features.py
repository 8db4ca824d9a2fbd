import jax
import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.feature import local_binary_pattern, multiscale_basic_features

from medjax.models.autoencoder import StackedAutoencoder
from medjax.tasks.segmentation import pixel_features as pf

# Odd, non-square sizes throughout, so rows and columns cannot be swapped unseen.
IMAGE = np.arange(35, dtype=np.float32).reshape(7, 5)


def test_patch_of_an_interior_pixel_is_its_window():
    patches = pf.image_patches(IMAGE, 3)
    assert patches.shape == (35, 9)
    np.testing.assert_array_equal(patches[2 * 5 + 3], IMAGE[1:4, 2:5].ravel())


def test_patch_of_a_corner_pixel_mirrors_the_border():
    # scipy's "reflect": the row / column outside the image repeats the edge one.
    a = IMAGE
    expected = [
        [a[0, 0], a[0, 0], a[0, 1]],
        [a[0, 0], a[0, 0], a[0, 1]],
        [a[1, 0], a[1, 0], a[1, 1]],
    ]
    np.testing.assert_array_equal(pf.image_patches(a, 3)[0], np.ravel(expected))
    # Last pixel, 5 x 5 window: two mirrored rows and columns.
    padded = np.pad(a, 2, mode="symmetric")
    np.testing.assert_array_equal(pf.image_patches(a, 5)[-1], padded[6:11, 4:9].ravel())
    assert padded[8, 6] == a[6, 4] and padded[10, 8] == a[5, 3]


def test_patch_means_equal_scipy_uniform_filter_at_every_pixel():
    # The same border as scipy.ndimage's mode="reflect", everywhere.
    image = np.random.default_rng(0).normal(size=(9, 6)).astype(np.float32)
    means = pf.image_patches(image, 5).mean(1).reshape(9, 6)
    reference = ndi.uniform_filter(image.astype(np.float64), 5, mode="reflect")
    np.testing.assert_allclose(means, reference, rtol=1e-5, atol=1e-6)


def test_constant_padding_and_bad_sizes():
    corner = pf.image_patches(IMAGE, 3, pad_mode="constant")[0].reshape(3, 3)
    np.testing.assert_array_equal(corner, [[0, 0, 0], [0, 0, 1], [0, 5, 6]])
    with pytest.raises(ValueError, match="odd size"):
        pf.image_patches(IMAGE, 4)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        pf.image_patches(IMAGE[None], 3)


def test_sampled_patches_are_the_windows_of_the_drawn_pixels():
    images = np.random.default_rng(1).normal(size=(3, 7, 5)).astype(np.float32)
    patches = pf.sample_patches(images, 3, 11, np.random.default_rng(2))
    rng = np.random.default_rng(2)
    which, pixels = rng.integers(0, 3, 11), rng.integers(0, 35, 11)
    assert patches.shape == (11, 9)
    for row, n, p in zip(patches, which, pixels):
        np.testing.assert_array_equal(row, pf.image_patches(images[n], 3)[p])


def test_handcrafted_features_equal_skimage_with_the_documented_channels():
    image = np.random.default_rng(3).uniform(-1, 1, (13, 11)).astype(np.float32)
    features = pf.handcrafted_features(image)
    assert features.shape == (13, 11, 24) == (13, 11, pf.num_handcrafted_channels())
    np.testing.assert_array_equal(features, multiscale_basic_features(image))
    # Channel 0: the image smoothed by the smallest Gaussian, the edge pixels
    # repeated outside (scikit-image's default mode="nearest"); channel 20: the
    # largest (sigma 16).
    for channel, sigma in ((0, 0.5), (20, 16.0)):
        np.testing.assert_allclose(
            features[..., channel],
            ndi.gaussian_filter(image, sigma, mode="nearest"),
            atol=1e-6,
        )
    options = {"edges": False, "sigma_min": 1.0, "sigma_max": 4.0, "num_sigma": 2}
    fewer = pf.handcrafted_features(image, **options)
    assert fewer.shape[-1] == 2 * 3 == pf.num_handcrafted_channels(**options)
    np.testing.assert_array_equal(fewer, multiscale_basic_features(image, **options))


def test_lbp_channels_are_smoothed_histograms_of_skimage_codes():
    image = np.random.default_rng(4).uniform(-1, 1, (13, 11)).astype(np.float32)
    features = pf.handcrafted_features(image, lbp=((8, 1.0), (4, 2.0)), lbp_sigma=1.5)
    assert features.shape[-1] == 24 + 10 + 6
    assert features.shape[-1] == pf.num_handcrafted_channels(lbp=((8, 1), (4, 2)))
    lbp = features[..., 24:34]
    np.testing.assert_allclose(lbp.sum(-1), 1.0, atol=1e-5)  # a histogram per pixel
    grey = np.round((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    codes = local_binary_pattern(grey, 8, 1.0, method="uniform").astype(int)
    one_hot = (codes[..., None] == np.arange(10)).astype(np.float32)
    reference = ndi.gaussian_filter(one_hot, (1.5, 1.5, 0), mode="nearest")
    np.testing.assert_allclose(lbp, reference, atol=1e-6)


def test_a_flat_image_has_flat_features_and_lbp_code_p():
    features = pf.handcrafted_features(np.full((9, 7), 0.3, np.float32), lbp=((8, 1),))
    np.testing.assert_allclose(features[..., 0:24:4], 0.3, atol=1e-6)  # intensities
    np.testing.assert_allclose(features[..., 1:24:4], 0.0, atol=1e-6)  # edges
    # Every neighbour equals the centre: all 8 bits set, uniform code P = 8.
    expected = np.zeros(10)
    expected[8] = 1.0
    np.testing.assert_allclose(
        features[..., 24:], np.broadcast_to(expected, (9, 7, 10))
    )


def _numpy_encoder(params, x):
    z = x
    for k in range(3):
        z = z @ np.asarray(params[f"encoder_{k}"]["kernel"]) + np.asarray(
            params[f"encoder_{k}"]["bias"]
        )
        z = np.maximum(z, 0) if k < 2 else z
    return z


def test_autoencoder_codes_are_the_stacks_encoder_of_each_patch():
    model = StackedAutoencoder(hidden=(6, 5, 3))
    patches = pf.image_patches(IMAGE / 35.0, 3)[:7]  # [7, 9]
    variables = model.init(jax.random.key(0), patches[:1, :, None], train=False)
    codes = pf.autoencoder_codes(model, variables, patches, batch_size=3)
    assert codes.shape == (7, 3) and codes.dtype == np.float32
    expected = _numpy_encoder(variables["params"], patches.astype(np.float64))
    np.testing.assert_allclose(codes, expected, rtol=1e-4, atol=1e-5)
    # A function of the parameters: the same again, other ones for other params.
    np.testing.assert_array_equal(
        codes, pf.autoencoder_codes(model, variables, patches, batch_size=100)
    )
    other = model.init(jax.random.key(1), patches[:1, :, None], train=False)
    assert np.abs(pf.autoencoder_codes(model, other, patches) - codes).max() > 1e-3
    assert pf.autoencoder_codes(model, variables, patches[:0]).shape == (0, 3)
