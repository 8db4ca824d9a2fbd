"""Iterative registration recovers known transforms of phantom pairs: a
monomodal affine to < 0.5 voxel TRE, a CT->MR affine with mutual information
where SSD fails, a smooth deformation with a B-spline FFD and a dense field."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi

from medjax.data.datasets.phantoms import torso
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial
from medjax.tasks.registration import IterativeRegistration

SIZE = 48


@pytest.fixture(scope="module")
def phantom():
    case = torso.torso_slice(np.random.default_rng(0), SIZE)
    # CT in a wide window (air, lung and fat stay apart: a W400 window makes air
    # and lung one value, which MI then cannot tell from the MR's contrast).
    ct = np.clip(case["image"].astype(np.float32) / 1000.0, -1.0, 1.0)[..., None]
    mr = (case["mr_image"].astype(np.float32) / 1000.0)[..., None]
    return ct, mr, case["organ_mask"]


def _truth():
    return spatial.affine_matrix(
        2, rotation=np.deg2rad(6.0), translation=jnp.array([2.0, -1.5]),
        zoom=jnp.array([1.05, 0.97]), center=spatial.image_center((SIZE, SIZE)),
    )


def _moved(image, matrix):
    """The moving image of a pair whose fixed->moving voxel map is ``matrix``."""
    return spatial.warp_affine(jnp.asarray(image), matrix, cval=float(image.min()))


def _tre(found, truth):
    grid = spatial.identity_grid((SIZE, SIZE))
    a, b = spatial.apply_homogeneous(found, grid), spatial.apply_homogeneous(truth, grid)
    return float(jnp.linalg.norm(a - b, axis=-1).mean())


def test_recovers_a_known_affine_on_a_monomodal_phantom_pair_below_half_a_voxel(phantom):
    ct, _, _ = phantom
    truth = _truth()
    assert _tre(jnp.eye(3), truth) > 3.0  # the task is not trivial
    method = IterativeRegistration("affine", "ncc", levels=(4, 2, 1), iterations=120,
                                   learning_rate=0.2)
    out = method(jnp.asarray(ct)[None], _moved(ct, truth)[None])
    assert _tre(out["matrix"][0], truth) < 0.5
    assert out["loss"].shape == (1, 360)
    # The displacement is the matrix's map minus the grid; warped = moving there.
    grid = spatial.identity_grid((SIZE, SIZE))
    np.testing.assert_allclose(
        out["displacement"][0], spatial.apply_homogeneous(out["matrix"][0], grid) - grid,
        atol=1e-4,
    )


def test_mutual_information_registers_ct_to_mr_where_ssd_fails(phantom):
    ct, mr, _ = phantom
    truth = _truth()
    fixed, moving = jnp.asarray(ct)[None], _moved(mr, truth)[None]
    errors = {}
    # 16 bins: a 48 x 48 slice has 2304 voxels, too few to fill 32 x 32 joint bins.
    for similarity, options in (("mi", (("num_bins", 16),)), ("ssd", ())):
        method = IterativeRegistration("affine", similarity, similarity_options=options,
                                       levels=(4, 2, 1), iterations=150, learning_rate=0.2)
        errors[similarity] = _tre(method(fixed, moving)["matrix"][0], truth)
    assert errors["mi"] < 0.75
    assert errors["ssd"] > 2.0


def test_a_batch_is_registered_pair_by_pair(phantom):
    ct, _, _ = phantom
    center = spatial.image_center((SIZE, SIZE))
    truths = [
        spatial.affine_matrix(2, translation=jnp.array([2.5, 0.0])),
        spatial.affine_matrix(2, rotation=np.deg2rad(-5.0), center=center),
    ]
    method = IterativeRegistration("rigid", "ssd", levels=(2, 1), iterations=100,
                                   learning_rate=0.2)
    fixed = jnp.stack([jnp.asarray(ct)] * 2)
    moving = jnp.stack([_moved(ct, m) for m in truths])
    out = method(fixed, moving)
    for found, truth in zip(out["matrix"], truths):
        assert _tre(found, truth) < 0.3


def _elastic_pair(ct, labels):
    import jax

    field = dense_fields.smooth_random_displacement(
        jax.random.PRNGKey(3), (SIZE, SIZE), sigma=6.0, magnitude=1.5
    )
    moving = dense_fields.warp_displacement(jnp.asarray(ct), field)
    moving_labels = dense_fields.warp_displacement(jnp.asarray(labels), field, order=0)
    return field, moving, moving_labels


def _dice(a, b):
    classes = [c for c in np.unique(a) if c > 1]  # organs, not background or body
    return np.mean([2 * np.sum((a == c) & (b == c)) / (np.sum(a == c) + np.sum(b == c))
                    for c in classes])


@pytest.mark.parametrize("transform, options, recovered", [
    ("bspline", {"grid_spacing": 8, "regularization": 0.1, "regularizer": "bending"}, 0.5),
    # A dense field is less constrained inside uniform organs (the aperture
    # problem): it matches the images as well but recovers less of the field.
    ("dense", {"regularization": 0.1, "learning_rate": 0.05}, 0.65),
])
def test_deformable_transforms_undo_a_smooth_deformation(phantom, transform, options,
                                                         recovered):
    ct, _, labels = phantom
    field, moving, moving_labels = _elastic_pair(ct, labels)
    options = {"learning_rate": 0.1, **options}
    method = IterativeRegistration(transform, "ssd", levels=(2, 1), iterations=150,
                                   **options)
    out = method(jnp.asarray(ct)[None], moving[None])
    displacement = out["displacement"][0]
    warped_labels = np.asarray(dense_fields.warp_displacement(moving_labels, displacement,
                                                              order=0))
    before, after = _dice(labels, np.asarray(moving_labels)), _dice(labels, warped_labels)
    assert after > before + 0.05 and after > 0.9
    # The true inverse, on the body: the pull-back that undoes the field.
    body = labels > 0
    grid = spatial.identity_grid((SIZE, SIZE))
    landed = dense_fields.invert_displacement_at(field, grid.reshape(-1, 2))
    truth_inverse = landed.reshape(grid.shape) - grid
    error = np.linalg.norm(np.asarray(displacement - truth_inverse), axis=-1)[body]
    initial = np.linalg.norm(np.asarray(truth_inverse), axis=-1)[body]
    assert error.mean() < recovered * initial.mean()
    assert np.all(np.asarray(dense_fields.jacobian_determinant(displacement)) > 0)


def test_lbfgs_recovers_a_subvoxel_translation(phantom):
    ct, _, _ = phantom
    # Blurred first: on the sharp phantom, a moving image made by linear
    # interpolation has its similarity optimum about 0.2 voxel off a fractional
    # shift (interpolation bias), whatever the optimiser.
    image = ndi.gaussian_filter(ct[..., 0], 1.0)[..., None]
    truth = spatial.affine_matrix(2, translation=jnp.array([-1.7, 2.2]))
    method = IterativeRegistration("translation", "ncc", levels=(2, 1), iterations=10,
                                   optimizer="lbfgs")
    out = method(jnp.asarray(image)[None], _moved(image, truth)[None])
    assert _tre(out["matrix"][0], truth) < 0.1


def test_bad_options_fail_with_one_line():
    with pytest.raises(ValueError, match="transform: expected one of"):
        IterativeRegistration("elastic")
    with pytest.raises(ValueError, match="iterations: expected one value or 3"):
        IterativeRegistration(iterations=(10, 10))
    with pytest.raises(ValueError, match="similarity"):
        IterativeRegistration(similarity="cc")
    method = IterativeRegistration(levels=(1,), iterations=1)
    with pytest.raises(ValueError, match="same number of spatial axes and channels"):
        method.register_pair(jnp.zeros((8, 8, 1)), jnp.zeros((8, 9, 9, 1)))


def test_a_moving_image_on_another_grid_through_its_geometry(phantom):
    """The moving image has half the fixed's resolution along axis 1 and a
    rotation in mm on top; the geometry (its initial map) and the fixed
    spacing make the rigid transform rigid in mm."""
    ct, _, _ = phantom
    spacing = (1.0, 2.0)  # the fixed image's voxels are 1 x 2 mm
    to_mm = jnp.diag(jnp.array([1.0, 2.0, 1.0]))
    center_mm = spatial.image_center((SIZE, SIZE)) * jnp.array(spacing)
    rotation_mm = spatial.affine_matrix(2, rotation=np.deg2rad(5.0), center=center_mm,
                                        translation=jnp.array([1.5, -2.0]))
    rotation = jnp.linalg.inv(to_mm) @ rotation_mm @ to_mm  # fixed voxel -> fixed voxel
    geometry = jnp.diag(jnp.array([1.0, 0.5, 1.0]))  # fixed voxel -> moving voxel
    truth = geometry @ rotation
    # The moving grid: half as many columns, content moved by `truth`.
    moving = spatial.warp_affine(jnp.asarray(ct), truth, cval=float(ct.min()),
                                 output_shape=(SIZE, SIZE // 2))
    method = IterativeRegistration("rigid", "ncc", levels=(2, 1), iterations=150,
                                   learning_rate=0.2)
    out = method(jnp.asarray(ct)[None], moving[None], geometry[None], spacing=spacing)
    found = np.asarray(out["matrix"][0])
    grid = np.asarray(spatial.identity_grid((SIZE, SIZE))).reshape(-1, 2)
    error = (grid @ found[:2, :2].T + found[:2, 2]) - (grid @ np.asarray(truth)[:2, :2].T
                                                      + np.asarray(truth)[:2, 2])
    # In moving voxels (1 x 4 mm): under half a voxel on average.
    assert np.abs(error).mean(0).max() < 0.5


def test_pyramid_smoothing_is_normalised_convolution():
    from medjax.tasks.registration.iterative import _smooth

    image = np.random.default_rng(0).normal(size=(13, 11, 2)).astype(np.float32)
    sigma = (1.5, 1.5, 0)
    expected = (ndi.gaussian_filter(image, sigma, mode="constant", truncate=3.0)
                / ndi.gaussian_filter(np.ones_like(image), sigma, mode="constant", truncate=3.0))
    np.testing.assert_allclose(np.asarray(_smooth(jnp.asarray(image), 1.5)), expected, atol=1e-6)
