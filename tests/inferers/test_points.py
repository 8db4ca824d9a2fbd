"""medjax-predict's points writer: coordinates back in the input's voxel
indices and world mm through reorientation and resampling, CSV and JSON
contents, PNG inputs without world coordinates, and the .csv requirement."""

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data import io
from medjax.errors import ConfigError
from medjax.inferers import points


def _brightest(inputs):
    """A stand-in model: one candidate per example at its brightest voxel, a
    box one voxel around it."""
    flat = inputs[..., 0].reshape(inputs.shape[0], -1)
    where = jnp.argmax(flat, axis=1)
    index = jnp.stack(jnp.unravel_index(where, inputs.shape[1:-1]), -1).astype(
        jnp.float32
    )
    score = flat.max(1)
    return {
        "points": index[:, None],
        "scores": score[:, None],
        "valid": score[:, None] > 0.5,
        "boxes": jnp.concatenate([index - 1, index + 1], -1)[:, None],
    }


def _blob(shape, centre, sigma=1.5):
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1)
    return np.exp(-0.5 * ((grid - np.asarray(centre)) ** 2).sum(-1) / sigma**2)


def _locator(spatial_dims, spacing):
    return points.Locator(
        locate_batch=_brightest,
        spatial_dims=spatial_dims,
        normalize=lambda x: np.asarray(x, np.float32),
        spacing=spacing,
        step=7,
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_points_come_back_in_the_inputs_voxels_and_world(tmp_path, spatial_dims):
    # Columns flipped, rows and columns swapped against RAS, 2 mm in-plane.
    affine = np.array(
        [[0, -2.0, 0, 60.0], [-2.0, 0, 0, 40.0], [0, 0, 5.0, -10.0], [0, 0, 0, 1]]
    )
    centre = (18.0, 10.0, 3.0)
    image = _blob((28, 24, 6), centre)
    io.save_nifti(image.astype(np.float32), tmp_path / "in.nii.gz", affine=affine)
    volume = io.load_image(tmp_path / "in.nii.gz")
    spacing = (4.0, 4.0) if spatial_dims == 2 else (4.0, 4.0, 5.0)
    found = _locator(spatial_dims, spacing)(volume)
    best = found.voxels[0]
    # Resampled at 4 mm the maximum is found within one input voxel.
    assert np.all(np.abs(best - centre) <= 1.0 + 1e-6), best
    np.testing.assert_allclose(
        found.world[0], (affine @ np.append(best, 1))[:3], atol=1e-6
    )
    # The box: one resampled voxel each way = 2 input voxels in-plane, ordered.
    box = found.boxes[0]
    np.testing.assert_allclose(box[3:5] - box[:2], [4.0, 4.0], atol=1e-6)
    assert np.all(box[:3] <= best) and np.all(best <= box[3:])
    if spatial_dims == 2:  # one candidate per slice, pooled, best first
        assert len(found.scores) >= 1 and np.all(np.diff(found.scores) <= 0)


def test_csv_and_json_of_a_png(tmp_path):
    from PIL import Image

    image = (_blob((20, 30), (5.0, 22.0), sigma=2.0) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    volume = io.load_image(tmp_path / "in.png")
    found = _locator(2, (6.25, 6.25))(volume)  # a PNG is not resampled
    np.testing.assert_allclose(found.voxels, [[5, 22]])
    assert found.world is None
    out = str(tmp_path / "out" / "found.csv")
    written = points.write_points(found, out, source="in.png", step=7)
    assert written == (out, str(tmp_path / "out" / "found.json"))
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "index",
        "score",
        "voxel_0",
        "voxel_1",
        "x_mm",
        "y_mm",
        "z_mm",
        "box_min_0",
        "box_min_1",
        "box_max_0",
        "box_max_1",
    ]
    assert (
        rows[0]["voxel_0"] == "5.0"
        and rows[0]["x_mm"] == ""
        and rows[0]["box_max_1"] == "23.0"
    )
    with open(written[1]) as f:
        content = json.load(f)
    assert content["step"] == 7 and content["candidates"][0]["voxel_1"] == 22.0
    points.write_overlay(
        found, str(tmp_path / "overlay.png"), lambda x: x, source="png"
    )
    assert (tmp_path / "overlay.png").stat().st_size > 1000


def test_points_need_a_csv_output(tmp_path):
    found = points.PointPredictions(voxels=np.zeros((0, 2)), scores=np.zeros(0))
    with pytest.raises(
        ConfigError, match=r"^output=.*mask.nii.gz: points are written as CSV"
    ):
        points.write_points(found, str(tmp_path / "mask.nii.gz"))
