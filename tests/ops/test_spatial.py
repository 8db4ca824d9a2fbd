import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from medjax.ops import displacement as dense_fields
from medjax.ops import spatial
from medjax.runtime import random_key

SHAPES = {2: (13, 17), 3: (9, 11, 7)}


def random_coords(rng, shape, count):
    """float32 points spread over [-1.5, n+0.5] on each axis, none near .5 (order 0
    rounding) and none within 1e-3 of the border 0 or n-1."""
    coords = np.stack([rng.uniform(-1.5, n + 0.5, count) for n in shape], -1)
    coords = coords.astype(np.float32)
    fraction = coords - np.floor(coords)
    upper = np.array(shape) - 1
    keep = np.all(np.abs(fraction - 0.5) > 1e-2, axis=-1)
    keep &= np.all(np.abs(coords) > 1e-3, axis=-1)
    keep &= np.all(np.abs(coords - upper) > 1e-3, axis=-1)
    coords = coords[keep]
    assert len(coords) > count // 2
    return coords


def scipy_sample(image, coords, order, cval):
    """Reference: scipy.ndimage.map_coordinates per channel, coords [K, ndim]."""
    coords = np.asarray(coords, np.float64).T
    return np.stack(
        [
            ndimage.map_coordinates(
                np.asarray(image[..., c], np.float64),
                coords,
                order=order,
                mode="constant",
                cval=cval,
            )
            for c in range(image.shape[-1])
        ],
        -1,
    )


def random_matrix(rng, ndim, shape):
    """A forward matrix with random rotation, zoom, shear, translation and flip."""
    return spatial.affine_matrix(
        ndim,
        rotation=rng.uniform(-0.6, 0.6, () if ndim == 2 else (3,)),
        zoom=rng.uniform(0.8, 1.25, ndim),
        shear=rng.uniform(-0.2, 0.2, () if ndim == 2 else (3,)),
        translation=rng.uniform(-2.0, 2.0, ndim),
        flip=rng.integers(0, 2, ndim).astype(bool),
        center=spatial.image_center(shape),
    )


def affine_image(shape, channels=2, seed=0):
    """An image whose channels are affine functions of position (linear
    interpolation reproduces it exactly)."""
    rng = np.random.default_rng(seed)
    grid = np.asarray(spatial.identity_grid(shape))
    slopes = rng.uniform(-1.0, 1.0, (len(shape), channels))
    return jnp.asarray(grid @ slopes + rng.uniform(-1, 1, channels), jnp.float32)


def gaussian_blob(shape, center, sigma):
    grid = np.asarray(spatial.identity_grid(shape), np.float64)
    return np.exp(-np.sum((grid - center) ** 2, -1) / (2 * sigma**2))


# --- identity_grid, sample ----------------------------------------------------


def test_identity_grid_hand_computed():
    grid = spatial.identity_grid((2, 3))
    assert grid.shape == (2, 3, 2) and grid.dtype == jnp.float32
    np.testing.assert_array_equal(grid[1, 2], [1.0, 2.0])
    np.testing.assert_array_equal(grid[..., 1], [[0, 1, 2], [0, 1, 2]])
    assert spatial.identity_grid((3, 4, 5))[2, 1, 4].tolist() == [2.0, 1.0, 4.0]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("order", [0, 1])
def test_sample_matches_scipy_map_coordinates(ndim, order):
    rng = np.random.default_rng(ndim * 10 + order)
    shape = SHAPES[ndim]
    image = rng.normal(size=(*shape, 2)).astype(np.float32)
    coords = random_coords(rng, shape, 400)
    expected = scipy_sample(image, coords, order, cval=-3.0)
    inside = np.all((coords >= 0) & (coords <= np.array(shape) - 1), -1)
    assert 0.2 < inside.mean() < 0.9  # both cases are exercised
    result = spatial.sample(
        jnp.asarray(image), jnp.asarray(coords), order=order, cval=-3.0
    )
    assert result.shape == (len(coords), 2)
    np.testing.assert_allclose(result, expected, atol=1e-4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_sample_label_map_nearest_keeps_labels(ndim):
    rng = np.random.default_rng(5)
    shape = SHAPES[ndim]
    labels = rng.integers(0, 5, shape).astype(np.int32)
    coords = random_coords(rng, shape, 300)
    expected = scipy_sample(labels[..., None], coords, 0, cval=0)[..., 0]
    result = spatial.sample(
        jnp.asarray(labels), jnp.asarray(coords).reshape(-1, 1, ndim), order=0
    )
    assert result.dtype == jnp.int32 and result.shape == (len(coords), 1)
    np.testing.assert_array_equal(result[:, 0], expected)


def test_sample_unlike_grid_constant_gives_cval_just_outside():
    # scipy 'constant': no blending with cval in (-1, 0); jax's own 'constant' blends.
    image = jnp.arange(1.0, 6.0)[:, None]
    result = spatial.sample(
        image, jnp.array([[-0.25], [0.0], [3.5], [4.0], [4.25]]), cval=-9
    )
    np.testing.assert_allclose(result[:, 0], [-9.0, 1.0, 4.5, 5.0, -9.0])


def test_sample_rejects_bad_order():
    with pytest.raises(ValueError, match="order"):
        spatial.sample(jnp.zeros((4, 5, 1)), jnp.zeros((3, 2)), order=3)


# --- affine_matrix --------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_identity_parameters_give_identity(ndim):
    shape = SHAPES[ndim]
    rotation = 0.0 if ndim == 2 else np.zeros(3)
    shear = 0.0 if ndim == 2 else np.zeros(3)
    matrix = spatial.affine_matrix(
        ndim,
        rotation=rotation,
        translation=np.zeros(ndim),
        zoom=np.ones(ndim),
        shear=shear,
        flip=np.zeros(ndim, bool),
        center=spatial.image_center(shape),
    )
    np.testing.assert_array_equal(matrix, np.eye(ndim + 1))
    np.testing.assert_array_equal(spatial.affine_matrix(ndim), np.eye(ndim + 1))
    image = np.random.default_rng(0).normal(size=(*shape, 3)).astype(np.float32)
    np.testing.assert_allclose(
        spatial.warp_affine(jnp.asarray(image), matrix), image, atol=1e-6
    )


def test_affine_matrix_2d_hand_computed():
    center = spatial.image_center((13, 17))
    np.testing.assert_array_equal(center, [6.0, 8.0])
    # 90 degrees turns axis 0 (row) onto axis 1 (col) about the centre.
    rotate = spatial.affine_matrix(2, rotation=np.pi / 2, center=center)
    moved = spatial.transform_points(rotate, jnp.array([[7.0, 8.0], [6.0, 10.0]]))
    np.testing.assert_allclose(moved, [[6.0, 9.0], [4.0, 8.0]], atol=1e-5)
    # a flip maps x to 2c - x on the flipped axis only
    flip = spatial.affine_matrix(2, flip=[True, False], center=center)
    np.testing.assert_allclose(
        spatial.transform_points(flip, jnp.array([[1.0, 3.0]])), [[11.0, 3.0]]
    )
    # x' = c + T + R Sh Z F (x - c), written out for one point
    matrix = spatial.affine_matrix(
        2,
        rotation=0.3,
        translation=[1.0, -2.0],
        zoom=[1.5, 0.5],
        shear=0.4,
        flip=[0.0, 1.0],
        center=[2.0, 3.0],
    )
    x = np.array([5.0, 7.0])
    c, s = np.cos(0.3), np.sin(0.3)
    linear = np.array([[c, -s], [s, c]]) @ [[1, 0.4], [0, 1]] @ np.diag([1.5, 0.5])
    expected = (
        [2.0, 3.0] + np.array([1.0, -2.0]) + linear @ np.diag([1, -1]) @ (x - [2, 3])
    )
    np.testing.assert_allclose(matrix[:2] @ np.append(x, 1.0), expected, rtol=1e-5)
    np.testing.assert_array_equal(matrix[2], [0, 0, 1])


def test_affine_matrix_3d_hand_computed():
    quarter = np.pi / 2
    # about axis 0: axis 1 turns onto axis 2; about axis 2: axis 0 onto axis 1
    about_0 = np.asarray(spatial.affine_matrix(3, rotation=[quarter, 0.0, 0.0]))
    np.testing.assert_allclose(about_0[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-6)
    about_1 = np.asarray(spatial.affine_matrix(3, rotation=[0.0, quarter, 0.0]))
    np.testing.assert_allclose(about_1[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-6)
    about_2 = np.asarray(spatial.affine_matrix(3, rotation=[0.0, 0.0, quarter]))
    np.testing.assert_allclose(about_2[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-6)
    # applied in order 0, 1, 2: e1 -> e2 (about 0) -> e0 (about 1) -> e1 (about 2)
    both = np.asarray(spatial.affine_matrix(3, rotation=[quarter, quarter, quarter]))
    np.testing.assert_allclose(both[:3, :3] @ [0, 1, 0], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(
        both[:3, :3], about_2[:3, :3] @ about_1[:3, :3] @ about_0[:3, :3], atol=1e-6
    )
    shear = spatial.affine_matrix(3, shear=[0.1, 0.2, 0.3])
    np.testing.assert_allclose(shear[:3, :3], [[1, 0.1, 0.2], [0, 1, 0.3], [0, 0, 1]])
    flip = spatial.affine_matrix(
        3, flip=[0, 1, 1], center=spatial.image_center((9, 11, 7))
    )
    np.testing.assert_allclose(
        spatial.transform_points(flip, jnp.array([[1.0, 2.0, 3.0]])), [[1.0, 8.0, 3.0]]
    )


def test_affine_matrix_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="rotation"):
        spatial.affine_matrix(3, rotation=0.1)
    with pytest.raises(ValueError, match="zoom"):
        spatial.affine_matrix(2, zoom=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="ndim"):
        spatial.affine_matrix(4)


# --- warps ------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_affine_matches_scipy_affine_transform(ndim):
    rng = np.random.default_rng(ndim)
    shape = SHAPES[ndim]
    image = rng.normal(size=(*shape, 2)).astype(np.float32)
    for _ in range(3):
        matrix = np.asarray(random_matrix(rng, ndim, shape), np.float64)
        inverse = np.linalg.inv(matrix)
        expected = np.stack(
            [
                ndimage.affine_transform(
                    image[..., c].astype(np.float64),
                    inverse,
                    order=1,
                    mode="constant",
                    cval=0.5,
                )
                for c in range(2)
            ],
            -1,
        )
        result = spatial.warp_affine(
            jnp.asarray(image), jnp.asarray(matrix, jnp.float32), cval=0.5
        )
        # Compare wherever the pulled-back point is not within rounding of the
        # image border (where float32 and float64 may disagree on inside/outside).
        source = np.asarray(spatial.identity_grid(shape)) @ inverse[:ndim, :ndim].T
        source += inverse[:ndim, ndim]
        upper = np.array(shape) - 1
        clear = np.all((np.abs(source) > 1e-3) & (np.abs(source - upper) > 1e-3), -1)
        assert clear.mean() > 0.95 and (expected[clear] == 0.5).any()
        np.testing.assert_allclose(
            np.asarray(result)[clear], expected[clear], atol=1e-4
        )


def test_warp_affine_output_shape_and_label_map():
    labels = np.random.default_rng(3).integers(0, 4, (13, 17)).astype(np.int32)
    shift = spatial.affine_matrix(2, translation=[2.0, -3.0])
    result = spatial.warp_affine(
        jnp.asarray(labels), shift, order=0, output_shape=(15, 12)
    )
    assert result.shape == (15, 12) and result.dtype == jnp.int32
    expected = np.zeros((15, 12), np.int32)
    expected[2:15, 0:12] = labels[0:13, 3:15]
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_transform_points_follows_warped_blob(ndim):
    shape = (31, 33) if ndim == 2 else (25, 27, 23)
    point = np.array([13.0, 17.0, 10.0][:ndim])
    blob = gaussian_blob(shape, point, sigma=2.0)[..., None].astype(np.float32)
    matrix = spatial.affine_matrix(
        ndim,
        rotation=0.5 if ndim == 2 else [0.3, -0.2, 0.4],
        zoom=[1.1, 0.9, 1.0][:ndim],
        shear=0.1 if ndim == 2 else [0.1, 0.0, -0.1],
        translation=[1.5, -2.0, 1.0][:ndim],
        center=spatial.image_center(shape),
    )
    moved = np.asarray(
        spatial.transform_points(matrix, jnp.asarray(point[None], jnp.float32))
    )[0]
    warped = np.asarray(spatial.warp_affine(jnp.asarray(blob), matrix))[..., 0]
    centre_of_mass = np.array(ndimage.center_of_mass(warped))
    assert np.linalg.norm(moved - point) > 2.0  # the point really moved
    np.testing.assert_allclose(centre_of_mass, moved, atol=0.1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_warp_displacement_of_affine_field_equals_warp_affine(ndim):
    rng = np.random.default_rng(7 + ndim)
    shape = SHAPES[ndim]
    image = jnp.asarray(rng.normal(size=(*shape, 2)), jnp.float32)
    matrix = random_matrix(rng, ndim, shape)
    field = dense_fields.affine_to_displacement(matrix, shape)
    assert field.shape == (*shape, ndim)
    np.testing.assert_allclose(
        dense_fields.warp_displacement(image, field, cval=0.25),
        spatial.warp_affine(image, matrix, cval=0.25),
        atol=1e-5,
    )
    # a pure translation pulls back by minus the translation everywhere
    shift = spatial.affine_matrix(ndim, translation=np.arange(1.0, ndim + 1))
    np.testing.assert_allclose(
        dense_fields.affine_to_displacement(shift, shape),
        np.broadcast_to(-np.arange(1.0, ndim + 1), (*shape, ndim)),
        atol=1e-6,
    )


# --- displacement fields ---------------------------------------------------------


def inside(coords, shape, tol=1e-3):
    """Points [..., ndim] inside [0, n-1] on every axis, not within tol of it."""
    upper = np.array(shape) - 1
    return np.all((coords > tol) & (coords < upper - tol), -1)


def valid_after_two_warps(first, second):
    """Voxels where warping by `first` then `second` never reads outside the
    image: x + second(x) is inside, and so is g + first(g) for every grid corner
    g of its cell."""
    first, second = np.asarray(first), np.asarray(second)
    shape = first.shape[:-1]
    grid = np.asarray(spatial.identity_grid(shape))
    first_ok = inside(grid + first, shape)
    pulled = grid + second
    valid = inside(pulled, shape)
    upper = np.array(shape) - 1
    lower = np.floor(np.clip(pulled, 0, upper)).astype(int)
    for corner in itertools.product((0, 1), repeat=len(shape)):
        index = np.minimum(lower + np.array(corner), upper)
        valid &= first_ok[tuple(np.moveaxis(index, -1, 0))]
    return valid


@pytest.mark.parametrize("ndim", [2, 3])
def test_compose_displacements_equals_warping_twice(ndim):
    shape = SHAPES[ndim]
    first, second = (
        dense_fields.smooth_random_displacement(key, shape, sigma=2.0, magnitude=1.0)
        for key in jax.random.split(random_key(ndim), 2)
    )
    # Linear interpolation reproduces an affine image exactly, so both sides
    # agree up to rounding wherever no sample falls outside the image.
    image = affine_image(shape)
    twice = dense_fields.warp_displacement(dense_fields.warp_displacement(image, first), second)
    composed = dense_fields.compose_displacements(first, second)
    once = dense_fields.warp_displacement(image, composed)
    valid = valid_after_two_warps(first, second)
    assert valid.sum() > 100
    np.testing.assert_allclose(
        np.asarray(once)[valid], np.asarray(twice)[valid], atol=1e-4
    )
    # composing in the other order is visibly wrong
    swapped = dense_fields.compose_displacements(second, first)
    wrong = dense_fields.warp_displacement(image, swapped)
    assert np.abs(np.asarray(wrong - twice)[valid]).max() > 0.05


def test_compose_with_zero_field_is_identity():
    field = dense_fields.smooth_random_displacement(
        random_key(0), (13, 17), sigma=2.0, magnitude=1.5
    )
    zero = jnp.zeros_like(field)
    np.testing.assert_allclose(
        dense_fields.compose_displacements(field, zero), field, atol=1e-6
    )
    np.testing.assert_allclose(
        dense_fields.compose_displacements(zero, field), field, atol=1e-6
    )


def test_compose_affine_fields_is_matrix_product():
    shape = (13, 17)
    center = spatial.image_center(shape)
    a = spatial.affine_matrix(2, rotation=0.3, zoom=[1.1, 0.9], center=center)
    b = spatial.affine_matrix(2, translation=[1.0, -0.5], shear=0.2, center=center)
    composed = dense_fields.compose_displacements(
        dense_fields.affine_to_displacement(a, shape),
        dense_fields.affine_to_displacement(b, shape),
    )
    expected = dense_fields.affine_to_displacement(b @ a, shape)  # move by a, then by b
    grid = spatial.identity_grid(shape)
    pulled = np.asarray(grid + dense_fields.affine_to_displacement(b, shape))
    valid = inside(pulled, shape)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(
        np.asarray(composed)[valid], np.asarray(expected)[valid], atol=1e-4
    )


def numpy_jacobian_determinant(field):
    ndim = field.shape[-1]
    gradients = [
        np.gradient(field[..., i], axis=tuple(range(ndim))) for i in range(ndim)
    ]
    jacobian = np.stack([np.stack(g, -1) for g in gradients], -2) + np.eye(ndim)
    return np.linalg.det(jacobian)


@pytest.mark.parametrize("ndim", [2, 3])
def test_jacobian_determinant(ndim):
    rng = np.random.default_rng(ndim)
    shape = SHAPES[ndim]
    matrix = random_matrix(rng, ndim, shape)
    determinant = dense_fields.jacobian_determinant(
        dense_fields.affine_to_displacement(matrix, shape)
    )
    expected = np.linalg.det(np.linalg.inv(np.asarray(matrix, np.float64)))
    assert determinant.shape == shape and abs(expected - 1) > 0.05
    np.testing.assert_allclose(determinant, np.full(shape, expected), rtol=1e-4)
    np.testing.assert_array_equal(
        dense_fields.jacobian_determinant(jnp.zeros((*shape, ndim))), 1.0
    )
    field = dense_fields.smooth_random_displacement(
        random_key(ndim), shape, sigma=2.0, magnitude=2.0
    )
    reference = numpy_jacobian_determinant(np.asarray(field, np.float64))
    assert reference.std() > 0.1
    np.testing.assert_allclose(
        dense_fields.jacobian_determinant(field), reference, atol=1e-4
    )


def test_smooth_random_displacement_statistics():
    shape, sigma, magnitude = (13, 17), 2.0, 1.5
    keys = jax.random.split(random_key(0), 400)
    fields = jax.vmap(
        lambda key: dense_fields.smooth_random_displacement(
            key, shape, sigma=sigma, magnitude=magnitude
        )
    )(keys)
    fields = np.asarray(fields, np.float64)
    assert fields.shape == (400, *shape, 2)
    # the same std at every voxel, corners included, for each component
    std = fields.std(axis=0)
    np.testing.assert_allclose(std[[0, 6, 12], [0, 8, 16]], magnitude, rtol=0.1)
    np.testing.assert_allclose(std.mean(axis=(0, 1)), magnitude, rtol=0.03)
    # Gaussian smoothing with std sigma: correlation exp(-h^2 / (4 sigma^2))
    for h in (1, 3):
        for axis in (1, 2):
            a = np.take(fields, range(shape[axis - 1] - h), axis=axis)
            b = np.take(fields, range(h, shape[axis - 1]), axis=axis)
            correlation = np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b))
            assert correlation == pytest.approx(
                np.exp(-(h**2) / (4 * sigma**2)), abs=0.03
            )
    # components are independent and the same key gives the same field
    assert abs(np.corrcoef(fields[..., 0].ravel(), fields[..., 1].ravel())[0, 1]) < 0.05
    again = dense_fields.smooth_random_displacement(
        keys[3], shape, sigma=sigma, magnitude=magnitude
    )
    np.testing.assert_allclose(again, fields[3], atol=1e-5)
    three_d = dense_fields.smooth_random_displacement(
        keys[0], (9, 11, 7), sigma=2.0, magnitude=2.0
    )
    assert three_d.shape == (9, 11, 7, 3) and 1.0 < float(three_d.std()) < 3.0


# --- differentiability, jit, vmap --------------------------------------------------


def test_grad_through_warp_affine_wrt_rotation_matches_finite_difference():
    shape = SHAPES[2]
    center = spatial.image_center(shape)
    blob = gaussian_blob(shape, [4.0, 11.0], 2.5)[..., None]
    image = jnp.asarray(blob, jnp.float32)
    rotate = spatial.affine_matrix(2, rotation=0.4, center=center)
    target = spatial.warp_affine(image, rotate)

    @jax.jit
    def loss(angle):
        matrix = spatial.affine_matrix(2, rotation=angle, center=center)
        return jnp.sum((spatial.warp_affine(image, matrix) - target) ** 2)

    angle, step = 0.1, 1e-2
    gradient = float(jax.jit(jax.grad(loss))(angle))
    finite = float(loss(angle + step) - loss(angle - step)) / (2 * step)
    assert abs(gradient) > 1.0
    assert gradient == pytest.approx(finite, rel=2e-2)
    assert gradient < 0  # turning towards 0.4 lowers the loss


def test_grad_wrt_image_and_translation():
    shape = SHAPES[3]
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(*shape, 2)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(*shape, 2)), jnp.float32)
    smooth = jnp.asarray(gaussian_blob(shape, [4.0, 5.0, 3.0], 2.0), jnp.float32)
    matrix = random_matrix(rng, 3, shape)

    @jax.jit
    def linear(img):
        return jnp.sum(weights * spatial.warp_affine(img, matrix))

    # The warp is linear in the image (cval 0), so <grad, image> == value.
    image_gradient = jax.jit(jax.grad(linear))(image)
    assert float(jnp.sum(image_gradient * image)) == pytest.approx(
        float(linear(image)), rel=1e-4
    )

    @jax.jit
    def loss(translation):
        shift = spatial.affine_matrix(3, translation=translation)
        return jnp.sum(spatial.warp_affine(smooth[..., None], shift)[..., 0] * smooth)

    translation = jnp.array([0.3, -0.2, 0.25])
    gradient = np.asarray(jax.jit(jax.grad(loss))(translation))
    steps = 1e-2 * np.eye(3, dtype=np.float32)
    finite = [(loss(translation + h) - loss(translation - h)) / 2e-2 for h in steps]
    assert np.abs(gradient).min() > 0.05
    np.testing.assert_allclose(gradient, finite, rtol=3e-2)


def test_jit_and_vmap_match_a_loop():
    rng = np.random.default_rng(0)
    shape = SHAPES[2]
    images = jnp.asarray(rng.normal(size=(4, *shape, 3)), jnp.float32)
    angles = jnp.asarray(rng.uniform(-1, 1, 4), jnp.float32)
    zooms = jnp.asarray(rng.uniform(0.8, 1.2, (4, 2)), jnp.float32)
    flips = jnp.asarray([[0, 0], [1, 0], [0, 1], [1, 1]], jnp.float32)
    fields = jax.vmap(
        lambda key: dense_fields.smooth_random_displacement(
            key, shape, sigma=2.0, magnitude=1.0
        )
    )(jax.random.split(random_key(0), 4))
    center = spatial.image_center(shape)

    @jax.jit
    def augment(image, angle, zoom, flip, field):
        matrix = spatial.affine_matrix(
            2, rotation=angle, zoom=zoom, flip=flip, center=center
        )
        affine_field = dense_fields.affine_to_displacement(matrix, shape)
        composed = dense_fields.compose_displacements(affine_field, field)
        return (
            spatial.warp_affine(image, matrix, order=0),
            dense_fields.warp_displacement(image, composed),
            dense_fields.jacobian_determinant(composed),
        )

    batched = jax.vmap(augment)(images, angles, zooms, flips, fields)
    for i in range(4):
        looped = augment(images[i], angles[i], zooms[i], flips[i], fields[i])
        for got, want in zip(batched, looped):
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    assert np.abs(np.asarray(batched[1])).mean() > 0.3  # not mostly cval


def test_point_inversion_solves_the_map():
    field = dense_fields.smooth_random_displacement(random_key(2), (30, 30), sigma=4.0, magnitude=1.5)
    points = jnp.array([[10.0, 12.5], [20.2, 7.7], [15.0, 15.0]])
    y = dense_fields.invert_displacement_at(field, points, 20)
    upper = jnp.array([29.0, 29.0])
    back = y + spatial.sample(field, jnp.clip(y, 0, upper))
    np.testing.assert_allclose(back, points, atol=1e-3)
