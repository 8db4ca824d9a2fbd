"""Registration similarities and regularisers: best at the true alignment, with
gradients toward it; MI's invariance to monotone remaps; hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi

from medjax.losses import registration as reg
from medjax.ops import spatial


def _smooth_image(shape, seed=0, sigma=2.5):
    rng = np.random.default_rng(seed)
    image = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    return (image / image.std()).astype(np.float32)[..., None]


def _shifted(image, shift):
    """``image`` moved by ``shift`` voxels along axis 0 (differentiable in shift)."""
    ndim = image.ndim - 1
    translation = jnp.zeros(ndim).at[0].set(shift)
    matrix = spatial.affine_matrix(ndim, translation=translation)
    return spatial.warp_affine(image, matrix, cval=float(image.mean()))


def _remap(image):
    """A monotone, non-linear and inverting intensity change (a 'second
    modality': what is bright in one is dark and saturated in the other)."""
    return 5.0 - 2.0 * np.tanh(image)


MEASURES = {
    "ssd": lambda f, m: reg.sum_of_squared_differences(f, m),
    "ncc": lambda f, m: reg.normalized_cross_correlation(f, m),
    "lncc": lambda f, m: reg.local_normalized_cross_correlation(f, m, window=7),
    "mi": lambda f, m: reg.mutual_information(f, m, num_bins=24),
}


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("shape", [(40, 36), (20, 18, 16)])
def test_similarity_is_best_at_the_true_alignment_and_its_gradient_points_there(name, shape):
    fixed = _smooth_image(shape)
    moving = _smooth_image(shape)  # the same image, moved below
    measure = MEASURES[name]
    sign = -1.0 if name == "ssd" else 1.0  # SSD is lowest when aligned

    def score(shift):
        return sign * measure(fixed[None], _shifted(moving, shift)[None])[0]

    shifts = np.arange(-3.0, 3.5, 0.5)
    values = np.array([score(s) for s in shifts])
    assert shifts[np.argmax(values)] == 0.0
    grad = jax.grad(score)
    assert grad(1.3) < 0 < grad(-1.3)


def test_mutual_information_is_invariant_to_a_monotone_remap_and_works_across_modalities():
    fixed = _smooth_image((48, 44), seed=3)
    other_modality = _remap(fixed)
    same = reg.mutual_information(fixed[None], fixed[None])[0]
    remapped = reg.mutual_information(fixed[None], other_modality[None])[0]
    independent = reg.mutual_information(fixed[None], _smooth_image((48, 44), seed=4)[None])[0]
    # Invariant up to binning: the remap changes which bins the values fall in.
    assert remapped == pytest.approx(float(same), rel=0.1)
    assert float(independent) < 0.2 * float(same)
    # An affine remap is exact: the rescaling into bins undoes it.
    affine = reg.mutual_information(fixed[None], (3.0 * fixed - 7.0)[None])[0]
    assert affine == pytest.approx(float(same), rel=1e-4)
    # Across the remap MI still peaks at alignment; SSD does not know the pair is related.
    shifts = np.arange(-3.0, 3.5, 1.0)
    mi = [reg.mutual_information(fixed[None], _shifted(other_modality, s)[None])[0] for s in shifts]
    assert shifts[int(np.argmax(mi))] == 0.0
    ssd = [reg.sum_of_squared_differences(fixed[None], _shifted(other_modality, s)[None])[0]
           for s in shifts]
    assert shifts[int(np.argmin(ssd))] != 0.0  # inverted contrast: worst near alignment


def test_mutual_information_of_a_two_level_image_is_its_entropy():
    # Half the voxels 0, half 1, against itself: MI = H = log 2. The Parzen
    # windows spread each level over neighbouring bins but the two levels do not
    # overlap, so MI stays log 2 exactly.
    image = np.zeros((16, 16, 1), np.float32)
    image[:8] = 1.0
    value = reg.mutual_information(image[None], image[None], num_bins=16)[0]
    assert float(value) == pytest.approx(np.log(2.0), rel=1e-4)


def test_hand_computed_ssd_ncc_with_roi_and_mask():
    fixed = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)[None, ..., None]
    warped = np.array([[2.0, 2.0], [3.0, 8.0]], np.float32)[None, ..., None]
    np.testing.assert_allclose(reg.sum_of_squared_differences(fixed, warped), [(1 + 16) / 4])
    roi = np.array([[[True, True], [True, False]]])
    np.testing.assert_allclose(reg.sum_of_squared_differences(fixed, warped, roi=roi), [1 / 3])
    np.testing.assert_allclose(
        reg.normalized_cross_correlation(fixed, warped),
        [np.corrcoef(fixed.ravel(), warped.ravel())[0, 1]], rtol=1e-4,
    )
    both = np.concatenate([fixed, fixed])
    out = reg.normalized_cross_correlation(both, both, mask=np.array([True, False]))
    np.testing.assert_allclose(out, [1.0, 0.0], atol=1e-5)


def test_local_ncc_against_a_direct_windowed_correlation():
    rng = np.random.default_rng(5)
    fixed = rng.normal(size=(1, 9, 8, 1)).astype(np.float32)
    warped = (fixed + 0.5 * rng.normal(size=fixed.shape)).astype(np.float32)
    window = 3
    local = []
    for i in range(9):
        for j in range(8):
            # The box's voxels inside the image (cut at the border).
            box = (slice(max(i - 1, 0), i + 2), slice(max(j - 1, 0), j + 2))
            a = fixed[0, ..., 0][box].ravel()
            b = warped[0, ..., 0][box].ravel()
            a, b = a - a.mean(), b - b.mean()
            local.append((a @ b) ** 2 / ((a @ a) * (b @ b) + 1e-5))
    value = reg.local_normalized_cross_correlation(fixed, warped, window=window)[0]
    assert float(value) == pytest.approx(np.mean(local), rel=1e-4)


def test_local_ncc_of_a_constant_image_is_zero_up_to_the_border():
    # With VoxelMorph's zero padding a constant image "correlates" with the
    # fixed image along the border (the padding looks like structure): 0.55
    # here. What is left is float32 rounding over the epsilon.
    fixed = (_smooth_image((20, 24)) + 5.0)[None]
    constant = np.full_like(fixed, 3.0)
    value = reg.local_normalized_cross_correlation(fixed, constant, window=9)[0]
    assert float(value) < 0.01


def test_similarity_loss_signs_and_unknown_name():
    fixed = _smooth_image((12, 12))[None]
    assert float(reg.similarity_loss("ncc", fixed, fixed)[0]) == pytest.approx(-1.0, abs=1e-4)
    assert float(reg.similarity_loss("ssd", fixed, fixed)[0]) == 0.0
    with pytest.raises(ValueError, match="expected one of"):
        reg.similarity_loss("cc", fixed, fixed)


def test_regularisers_vanish_where_they_should_and_match_hand_values():
    shape = (6, 7)
    grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij"), -1)
    translation = np.broadcast_to(np.array([1.5, -2.0]), shape + (2,))[None]
    affine = (grid @ np.array([[0.1, 0.2], [-0.3, 0.05]]).T)[None]
    assert float(reg.diffusion_penalty(translation)[0]) == 0.0
    assert float(reg.bending_energy(affine)[0]) == pytest.approx(0.0, abs=1e-10)
    # d = (0.1 x0 + 0.2 x1, -0.3 x0 + 0.05 x1): differences along axis 0 are
    # (0.1, -0.3), along axis 1 (0.2, 0.05).
    expected = (0.1**2 + 0.3**2) / 2 + (0.2**2 + 0.05**2) / 2
    assert float(reg.diffusion_penalty(affine)[0]) == pytest.approx(expected, rel=1e-5)
    # A quadratic u_0 = x0^2 has second difference 2 along axis 0, 0 elsewhere.
    quadratic = np.zeros((1,) + shape + (2,))
    quadratic[..., 0] = grid[..., 0] ** 2
    assert float(reg.bending_energy(quadratic)[0]) == pytest.approx(4.0 / 2, rel=1e-5)
