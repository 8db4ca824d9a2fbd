from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.inferers.sliding_window import (
    gaussian_importance_map,
    sliding_window_positions,
    sliding_window_predict,
    sliding_window_starts,
)
from medjax.runtime import random_key


def _normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _pointwise(windows):
    """Translation-equivariant predict_fn: a fixed per-voxel map to 3 outputs."""
    c = windows.shape[-1]
    mix = jnp.arange(1.0, 1.0 + 3 * c).reshape(c, 3) / 7.0
    return jnp.tanh(windows @ mix) + windows.sum(-1, keepdims=True) ** 2


def _conv(windows):
    """A 3x3 'SAME' convolution: not translation-equivariant at window borders."""
    kernel = jnp.linspace(-1.0, 1.0, 9 * windows.shape[-1] * 2).reshape(
        3, 3, windows.shape[-1], 2
    )
    return jax.lax.conv_general_dilated(
        windows, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def test_starts_on_a_hand_computed_case():
    assert sliding_window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    # stride int(5 * 0.75) = 3; the last window is moved back flush with the end
    assert sliding_window_starts(11, 5, 0.25) == [0, 3, 6]
    assert sliding_window_starts(12, 5, 0.25) == [0, 3, 6, 7]
    assert sliding_window_starts(7, 7, 0.5) == [0]
    assert sliding_window_starts(5, 3, 0.9) == [0, 1, 2]  # stride at least 1
    assert sliding_window_positions((10, 7), (4, 7), 0.5) == [
        (0, 0), (2, 0), (4, 0), (6, 0)
    ]


def _gaussian_reference(size, sigma_scale):
    """Gaussian map written out voxel by voxel, as in MONAI's compute_importance_map
    then divided by its maximum."""
    out = np.zeros(size)
    centre = [(s - 1) / 2 for s in size]
    for index in np.ndindex(*size):
        out[index] = np.exp(
            -sum((i - c) ** 2 / (2 * (sigma_scale * s) ** 2)
                 for i, c, s in zip(index, centre, size))
        )
    return np.maximum(out / out.max(), 1e-3)


@pytest.mark.parametrize("size", [(9, 9), (8, 13), (5, 6, 7)])
def test_gaussian_importance_map_matches_numpy(size):
    weights = np.asarray(gaussian_importance_map(size, sigma_scale=0.125))
    assert weights.shape == size and weights.dtype == np.float32
    np.testing.assert_allclose(weights, _gaussian_reference(size, 0.125), rtol=1e-6)
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() > 0  # corners are clamped to 1e-3, never zero
    assert weights[(0,) * len(size)] == pytest.approx(1e-3)  # 0.125 clamps corners
    for axis in range(len(size)):
        np.testing.assert_array_equal(weights, np.flip(weights, axis))
    if all(s % 2 for s in size):
        assert weights[tuple(s // 2 for s in size)] == 1.0


def test_wider_sigma_is_never_clamped():
    weights = np.asarray(gaussian_importance_map((6, 10), sigma_scale=0.5))
    np.testing.assert_allclose(weights, _gaussian_reference((6, 10), 0.5), rtol=1e-6)
    assert weights.min() > 1e-3


@pytest.mark.parametrize("weighting", ["gaussian", "constant"])
def test_window_covering_the_image_reproduces_predict_fn(weighting):
    images = _normal((2, 13, 11, 2))
    out = sliding_window_predict(_conv, images, (13, 11), weighting=weighting)
    assert out.shape == (2, 13, 11, 2) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, _conv(images), rtol=1e-6, atol=1e-6)


def test_window_covering_the_image_reproduces_a_unet():
    from medjax.models.unet import unet_tiny

    model = unet_tiny(num_classes=3, norm="batch")
    images = _normal((2, 12, 9, 1))
    # parameters drawn in numpy: compiling model.init's initialisers is slow on CPU
    shapes = jax.eval_shape(partial(model.init, train=False), random_key(0), images)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(
        lambda a: jnp.asarray(0.5 * rng.normal(size=a.shape) + 1.0, jnp.float32),
        shapes,
    )  # positive running variances, nonzero biases and means

    def predict(windows):
        return model.apply(variables, windows, train=False)

    out = jax.jit(
        lambda x: sliding_window_predict(predict, x, (12, 9), window_batch_size=1)
    )(images)
    np.testing.assert_allclose(out, jax.jit(predict)(images), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape, window, overlap, weighting",
    [
        ((2, 23, 17, 2), (8, 6), 0.5, "gaussian"),
        ((1, 19, 5, 1), (7, 9), 0.25, "gaussian"),  # image smaller than window on W
        ((3, 10, 10, 1), (4, 4), 0.0, "constant"),
        ((1, 11, 9, 4, 2), (5, 4, 6), 0.5, "gaussian"),  # 3D, D smaller than window
        ((2, 7, 6, 5, 1), (3, 3, 3), 0.6, "constant"),
    ],
)
def test_pointwise_predict_fn_is_reproduced_by_any_tiling(
    shape, window, overlap, weighting
):
    images = _normal(shape, 2)
    out = sliding_window_predict(
        _pointwise, images, window, overlap=overlap, weighting=weighting,
        window_batch_size=3,
    )
    assert out.shape == shape[:-1] + (3,)
    np.testing.assert_allclose(out, _pointwise(images), rtol=1e-5, atol=1e-6)


def test_padding_value_reaches_the_windows():
    # predict_fn reports the window mean: windows include the padding, so the
    # result depends on padding_value when the image is smaller than the window
    def window_mean(windows):
        return jnp.broadcast_to(windows.mean(axis=(1, 2), keepdims=True), windows.shape)

    images = jnp.ones((1, 3, 8, 1))
    a = sliding_window_predict(window_mean, images, (5, 8), padding_value=0.0)
    b = sliding_window_predict(window_mean, images, (5, 8), padding_value=1.0)
    np.testing.assert_allclose(a, 3 / 5, rtol=1e-6)
    np.testing.assert_allclose(b, 1.0, rtol=1e-6)


def test_overlapping_windows_blend_with_the_importance_weights():
    # predict_fn returns each window's start corner (via its top-left value);
    # the blend at a voxel is the weight-averaged start of the windows over it
    images = jnp.arange(10.0).reshape(1, 10, 1, 1) * jnp.ones((1, 1, 3, 1))

    def window_start(windows):
        return jnp.broadcast_to(windows[:, :1, :1, :], windows.shape)

    out = sliding_window_predict(window_start, images, (4, 3), overlap=0.5)
    weights = np.asarray(gaussian_importance_map((4, 3)))[:, 0]
    num, den = np.zeros(10), np.zeros(10)
    for start in (0, 2, 4, 6):
        num[start : start + 4] += weights * start
        den[start : start + 4] += weights
    np.testing.assert_allclose(out[0, :, 0, 0], num / den, rtol=1e-6)


def test_works_under_jit_with_a_closed_over_model():
    kernel = _normal((1, 1, 1, 2, 4), 3)

    @jax.jit
    def predict(images, kernel):
        def fn(windows):  # 1x1x1 conv: translation-equivariant
            return jnp.einsum("...c,ck->...k", windows, kernel[0, 0, 0])

        return sliding_window_predict(fn, images, (4, 5, 3), overlap=0.5)

    images = _normal((2, 9, 7, 6, 2), 4)
    expected = jnp.einsum("...c,ck->...k", images, kernel[0, 0, 0])
    np.testing.assert_allclose(predict(images, kernel), expected, rtol=1e-5, atol=1e-6)


def test_bad_options_fail_before_compiling():
    images = jnp.ones((1, 8, 8, 1))
    with pytest.raises(ValueError, match="window_size"):
        sliding_window_predict(_pointwise, images, (4, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(_pointwise, images, (4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="weighting"):
        sliding_window_predict(_pointwise, images, (4, 4), weighting="box")
    with pytest.raises(ValueError, match="predict_fn"):
        sliding_window_predict(lambda w: w[:, :2], images, (4, 4))
