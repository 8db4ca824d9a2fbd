import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.ops.views import (
    context_view,
    extract_patch,
    make_views,
    orthogonal_patches,
    view_spatial_dims,
)


def numpy_patch(image, center, size, pad_value=0.0):
    """Reference: slice a copy zero-padded by a margin wider than any test offset."""
    margin = 64
    pads = [(margin, margin)] * len(size) + [(0, 0)]
    padded = np.pad(np.asarray(image), pads, constant_values=pad_value)
    corner = np.round(np.asarray(center)).astype(int) - np.array(size) // 2 + margin
    return padded[tuple(slice(c, c + s) for c, s in zip(corner, size))]


def numpy_block_mean(region, scale):
    """Reference: mean over each scale^ndim block via reshape."""
    size = [s // scale for s in region.shape[:-1]]
    shape = [d for s in size for d in (s, scale)] + [region.shape[-1]]
    return region.reshape(shape).mean(axis=tuple(range(1, 2 * len(size), 2)))


IMAGE_2D = np.random.default_rng(0).normal(size=(13, 10, 3)).astype(np.float32)
VOLUME = np.random.default_rng(1).normal(size=(9, 11, 7, 2)).astype(np.float32)

# Interior points, points near (and beyond) every border, fractional coordinates.
CENTERS_2D = [
    (6.0, 5.0),
    (0.0, 0.0),
    (12.0, 9.0),
    (0.4, 9.6),
    (12.6, 0.0),
    (-1.0, 4.0),
    (3.0, 11.0),
    (6.2, 4.7),
    (-30.0, 50.0),
]
CENTERS_3D = [
    (4.0, 5.0, 3.0),
    (0.0, 0.0, 0.0),
    (8.0, 10.0, 6.0),
    (0.0, 10.0, 3.3),
    (8.4, 0.0, 6.0),
    (4.0, 5.0, -1.0),
    (9.0, 5.0, 7.0),
    (2.6, 7.4, 1.5),
]


@pytest.mark.parametrize("size", [(5, 3), (4, 7), (1, 1), (13, 10), (17, 2)])
def test_extract_patch_matches_numpy_slicing_2d(size):
    for center in CENTERS_2D:
        got = extract_patch(jnp.asarray(IMAGE_2D), jnp.asarray(center), size)
        assert got.shape == (*size, 3)
        np.testing.assert_array_equal(got, numpy_patch(IMAGE_2D, center, size))


def test_extract_patch_matches_numpy_slicing_3d_inside_jit_and_vmap():
    size = (5, 4, 3)
    centers = np.array(CENTERS_3D, np.float32)
    batched = jax.jit(
        jax.vmap(lambda c: extract_patch(jnp.asarray(VOLUME), c, size, pad_value=-2.0))
    )(jnp.asarray(centers))
    assert batched.shape == (len(centers), *size, 2)
    for center, got in zip(centers, batched):
        np.testing.assert_array_equal(got, numpy_patch(VOLUME, center, size, -2.0))
    # the border cases really are partly padding (so the test can catch a clamp)
    assert (batched == -2.0).any() and (batched[0] != -2.0).all()


def test_extract_patch_vmaps_over_images_and_keeps_integer_dtype():
    images = np.arange(2 * 6 * 5, dtype=np.int32).reshape(2, 6, 5, 1)
    centers = np.array([[0.0, 4.0], [5.0, 1.0]])
    got = jax.vmap(lambda x, c: extract_patch(x, c, (3, 3), pad_value=-1))(
        jnp.asarray(images), jnp.asarray(centers)
    )
    assert got.dtype == jnp.int32
    # hand-computed: rows -1..1, columns 3..5 of image 0 (values 5*r + c)
    np.testing.assert_array_equal(
        got[0, ..., 0], [[-1, -1, -1], [3, 4, -1], [8, 9, -1]]
    )
    np.testing.assert_array_equal(
        got[1], numpy_patch(images[1], centers[1], (3, 3), -1)
    )


def test_extract_patch_rejects_a_center_of_the_wrong_length():
    with pytest.raises(ValueError, match="center"):
        extract_patch(jnp.zeros((5, 5, 1)), jnp.zeros(3), 3)


@pytest.mark.parametrize(
    "image, center, size, scale",
    [
        (IMAGE_2D, (6.0, 5.0), (3, 3), 2),
        (IMAGE_2D, (1.0, 8.0), (3, 2), 3),
        (VOLUME, (4.0, 5.0, 3.0), (3, 3, 3), 2),
        (VOLUME, (0.0, 10.0, 6.4), (3, 1, 2), 3),
    ],
)
def test_context_view_is_the_block_mean_of_the_region(image, center, size, scale):
    got = context_view(jnp.asarray(image), jnp.asarray(center), size, scale)
    region = numpy_patch(image, center, tuple(s * scale for s in size))
    assert got.shape == (*size, image.shape[-1])
    np.testing.assert_allclose(
        got, numpy_block_mean(region, scale), rtol=1e-5, atol=1e-6
    )


def test_context_view_with_scale_one_is_the_patch():
    center = jnp.array([3.0, 2.0])
    np.testing.assert_allclose(
        context_view(jnp.asarray(IMAGE_2D), center, 5, 1),
        extract_patch(jnp.asarray(IMAGE_2D), center, 5),
    )


@pytest.mark.parametrize("center", [(4, 5, 3), (0, 0, 0), (8, 10, 6), (1, 9, 5)])
def test_orthogonal_patches_match_numpy_planes(center):
    r, c, s = center
    h = 2  # size 5
    padded = np.pad(VOLUME, [(5, 5)] * 3 + [(0, 0)])
    r, c, s = r + 5, c + 5, s + 5  # indices into the padded copy
    axial, coronal, sagittal = orthogonal_patches(
        jnp.asarray(VOLUME), jnp.asarray(center, jnp.float32), 5
    )
    np.testing.assert_array_equal(
        axial, padded[r - h : r + h + 1, c - h : c + h + 1, s]
    )
    np.testing.assert_array_equal(
        coronal, padded[r, c - h : c + h + 1, s - h : s + h + 1]
    )
    np.testing.assert_array_equal(
        sagittal, padded[r - h : r + h + 1, c, s - h : s + h + 1]
    )


def test_orthogonal_patches_with_one_size_per_axis():
    axial, coronal, sagittal = orthogonal_patches(
        jnp.asarray(VOLUME), jnp.array([4.0, 5.0, 3.0]), (3, 5, 4)
    )
    assert (axial.shape, coronal.shape, sagittal.shape) == (
        (3, 5, 2),
        (5, 4, 2),
        (3, 4, 2),
    )
    np.testing.assert_array_equal(coronal, VOLUME[4, 3:8, 1:5])


def test_make_views_returns_the_named_views_of_each_example():
    volumes = np.stack([VOLUME, VOLUME[::-1] * 2])
    centers = np.array([[4.0, 5.0, 3.0], [0.0, 10.0, 6.0]], np.float32)
    names = ("sagittal", "local", "context", "axial", "coronal")
    views = jax.jit(
        lambda x, c: make_views(names, x, c, patch_size=3, context_scale=2)
    )(jnp.asarray(volumes), jnp.asarray(centers))
    assert [v.shape for v in views] == [
        (2, 3, 3, 2),
        (2, 3, 3, 3, 2),
        (2, 3, 3, 3, 2),
        (2, 3, 3, 2),
        (2, 3, 3, 2),
    ]
    for b in range(2):
        volume, center = jnp.asarray(volumes[b]), jnp.asarray(centers[b])
        axial, coronal, sagittal = orthogonal_patches(volume, center, 3)
        np.testing.assert_array_equal(views[0][b], sagittal)
        np.testing.assert_array_equal(
            views[1][b], numpy_patch(volumes[b], centers[b], (3,) * 3)
        )
        np.testing.assert_allclose(
            views[2][b], context_view(volume, center, 3, 2), rtol=1e-6
        )
        np.testing.assert_array_equal(views[3][b], axial)
        np.testing.assert_array_equal(views[4][b], coronal)
    assert not np.allclose(views[1][0], views[1][1])


def test_make_views_in_2d_and_per_stream_dims():
    images = jnp.asarray(np.stack([IMAGE_2D] * 3))
    local, context = make_views(
        ["local", "context"],
        images,
        jnp.zeros((3, 2)),
        patch_size=(5, 3),
        context_scale=3,
    )
    assert local.shape == (3, 5, 3, 3) and context.shape == (3, 5, 3, 3)
    assert view_spatial_dims(("local", "axial", "sagittal"), 3) == (3, 2, 2)


@pytest.mark.parametrize(
    "names, shape, match",
    [
        (("local", "zoom"), (2, 8, 8, 1), "task.views: unknown view 'zoom'"),
        (("axial",), (2, 8, 8, 1), "task.views: 'axial' is a plane"),
        ((), (2, 8, 8, 1), "task.views"),
        (("local",), (2, 8, 1), "make_views expects a batch"),
    ],
)
def test_make_views_rejects_bad_names_and_shapes(names, shape, match):
    with pytest.raises(ValueError, match=match) as error:
        make_views(
            names, jnp.zeros(shape), jnp.zeros((2, len(shape) - 2)), patch_size=3
        )
    assert "\n" not in str(error.value)


def test_make_views_rejects_bad_sizes_and_centers():
    images = jnp.zeros((2, 8, 8, 1))
    with pytest.raises(ValueError, match="task.patch_size"):
        make_views(["local"], images, jnp.zeros((2, 2)), patch_size=(3, 3, 3))
    with pytest.raises(ValueError, match="task.context_scale"):
        make_views(
            ["context"], images, jnp.zeros((2, 2)), patch_size=3, context_scale=0
        )
    with pytest.raises(ValueError, match="center"):
        make_views(["local"], images, jnp.zeros((2, 3)), patch_size=3)
