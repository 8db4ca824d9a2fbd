"""RoIAlign against a numpy transcription of torchvision's CPU kernel."""

import jax.numpy as jnp
import numpy as np

from medjax.ops.roi_align import roi_align


def _bilinear_torchvision(image, y, x):
    """torchvision's bilinear_interpolate: 0 beyond one pixel outside the map,
    clamped onto the border within it. ``image [H, W, C]``."""
    height, width = image.shape[:2]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(image.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * image[y_low, x_low]
        + (1 - ly) * lx * image[y_low, x_high]
        + ly * (1 - lx) * image[y_high, x_low]
        + ly * lx * image[y_high, x_high]
    )


def _roi_align_torchvision(image, box_xyxy, out_h, out_w, scale, ratio, aligned):
    """roi_align_forward_kernel_impl for one box (x1, y1, x2, y2), channels last."""
    offset = 0.5 if aligned else 0.0
    start_w, start_h = box_xyxy[0] * scale - offset, box_xyxy[1] * scale - offset
    end_w, end_h = box_xyxy[2] * scale - offset, box_xyxy[3] * scale - offset
    roi_w, roi_h = end_w - start_w, end_h - start_h
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    out = np.zeros((out_h, out_w, image.shape[-1]))
    for ph in range(out_h):
        for pw in range(out_w):
            for iy in range(ratio):
                y = start_h + ph * bin_h + (iy + 0.5) * bin_h / ratio
                for ix in range(ratio):
                    x = start_w + pw * bin_w + (ix + 0.5) * bin_w / ratio
                    out[ph, pw] += _bilinear_torchvision(image, y, x)
            out[ph, pw] /= ratio * ratio
    return out


def test_roi_align_matches_torchvision_semantics_on_random_inputs():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(9, 11, 3)).astype(np.float32)  # a stride-4 map
    # Image-voxel boxes (rows, cols inclusive), some reaching past the map
    # (36 x 44 image voxels) so that the border rules are exercised.
    low = rng.uniform(-8, 40, (6, 2))
    boxes = np.concatenate([low, low + rng.uniform(0, 20, (6, 2))], 1)
    boxes[0] = [-6.0, -3.0, 2.0, 50.0]
    for aligned in (True, False):
        got = roi_align(
            jnp.asarray(features),
            jnp.asarray(boxes, jnp.float32),
            (3, 4),
            spatial_scale=0.25,
            sampling_ratio=2,
            aligned=aligned,
        )
        assert got.shape == (6, 3, 4, 3)
        for r, (r0, c0, r1, c1) in enumerate(boxes):
            expected = _roi_align_torchvision(
                features, (c0, r0, c1 + 1, r1 + 1), 3, 4, 0.25, 2, aligned
            )
            np.testing.assert_allclose(got[r], expected, atol=1e-5)


def test_roi_align_of_a_box_on_whole_cells_averages_them():
    # Stride 1, aligned: the box of voxels rows 1..2, cols 0..3 spans [0.5, 2.5]
    # x [-0.5, 3.5]; 1 x 2 bins of 2 x 2 cells with 2 x 2 samples each fall on the
    # cell centres (rows 1, 2; cols 0, 1 and 2, 3). Features are linear in
    # (row, col), so each bin reads its centre value 10 * row + col.
    rows, cols = np.meshgrid(np.arange(5.0), np.arange(6.0), indexing="ij")
    features = (10 * rows + cols)[..., None].astype(np.float32)
    got = roi_align(
        jnp.asarray(features),
        jnp.asarray([[1.0, 0.0, 2.0, 3.0]]),
        (1, 2),
        sampling_ratio=2,
    )
    # Bins: rows 1..2 x cols 0..1 (centre 1.5, 0.5) and cols 2..3 (1.5, 2.5).
    np.testing.assert_allclose(got[0, :, :, 0], [[15.5, 17.5]], atol=1e-5)


def test_roi_align_in_3d_of_a_depth_constant_map_is_the_2d_result():
    rng = np.random.default_rng(6)
    plane = rng.normal(size=(7, 8, 2)).astype(np.float32)
    volume = np.repeat(plane[:, :, None, :], 5, axis=2)
    boxes_2d = np.asarray([[0.5, 1.0, 5.0, 6.5], [2.0, 0.0, 3.0, 7.0]], np.float32)
    boxes_3d = np.asarray(
        [[0.5, 1.0, 1.0, 5.0, 6.5, 3.0], [2.0, 0.0, 0.0, 3.0, 7.0, 4.0]], np.float32
    )
    flat = roi_align(jnp.asarray(plane), jnp.asarray(boxes_2d), (2, 3))
    deep = roi_align(jnp.asarray(volume), jnp.asarray(boxes_3d), (2, 3, 2))
    np.testing.assert_allclose(deep, np.repeat(flat[:, :, :, None], 2, 3), atol=1e-5)


def test_roi_align_gradient_spreads_each_bin_over_its_samples():
    import jax

    # A box well inside the map: every bilinear sample's weights sum to 1 and
    # each bin averages its samples, so d(sum of the 2 x 2 bins) / d(features)
    # sums to 4 per channel, all of it on cells the box touches.
    features = jnp.zeros((8, 8, 2))
    box = jnp.asarray([[2.0, 1.0, 4.0, 5.0]])  # rows 2..4, cols 1..5
    grad = jax.grad(lambda f: roi_align(f, box, (2, 2), sampling_ratio=3).sum())(
        features
    )
    np.testing.assert_allclose(grad.sum(axis=(0, 1)), [4.0, 4.0], rtol=1e-5)
    outside = np.ones((8, 8), bool)
    outside[1:6, 0:7] = False  # rows 1.5..4.5 and cols 0.5..5.5 read these cells
    assert np.abs(np.asarray(grad)[outside]).max() == 0
