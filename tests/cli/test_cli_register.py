"""medjax-register end to end, in-process through its entry point: an affine
NIfTI pair on different grids round-trips (the ITK affine file is the true world
map, the warped image and labels land on the fixed ones, SimpleITK applies the
displacement field the same way). Its one-line errors are in test_user_errors."""

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from medjax.data import io
from medjax.data.datasets.phantoms import torso
from medjax.tasks.registration import world
from tests.cli.test_user_errors import run_program

sitk = pytest.importorskip("SimpleITK")

pytestmark = pytest.mark.slow


SIZE = 32


def _rotation_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A CT phantom volume (fixed, 3 x 3 x 4 mm voxels) and the same patient
    moved by a known world affine, resampled onto another grid (2.5 mm voxels,
    another origin): the moving image. Returns paths and the true world map."""
    directory = tmp_path_factory.mktemp("register")
    # The torso fills the volume to its ends along z: pad air above and below,
    # so no anatomy leaves either field of view (a cut-off body's edge would
    # look like skin in one scan and not the other).
    case = torso.torso_volume(np.random.default_rng(0), SIZE, depth=SIZE - 8)
    pad = ((0, 0), (0, 0), (4, 4))
    ct = np.pad(case["image"].astype(np.float32), pad, constant_values=-1000.0)
    case["organ_mask"] = np.pad(case["organ_mask"], pad)
    fixed_affine = np.diag([3.0, 3.0, 4.0, 1.0])
    fixed_affine[:3, 3] = (-48.0, -40.0, -60.0)
    moving_affine = np.diag([2.5, 2.5, 2.5, 1.0])
    moving_affine[:3, 3] = (-55.0, -50.0, -80.0)  # a field of view around the fixed one
    # Fixed world point p sits at world point truth @ p in the moving scan.
    truth = _rotation_x(np.deg2rad(4.0))
    truth[:3, 3] = (3.0, -2.0, 4.0)
    moving_shape = (44, 44, 60)
    # moving(q) = fixed(inverse(truth) q), q over the moving grid, in fixed voxels.
    to_fixed_voxels = np.linalg.inv(fixed_affine) @ np.linalg.inv(truth) @ moving_affine
    moving = ndi.affine_transform(ct, to_fixed_voxels[:3, :3], to_fixed_voxels[:3, 3],
                                  output_shape=moving_shape, order=1, cval=-1000.0)
    labels = ndi.affine_transform(case["organ_mask"], to_fixed_voxels[:3, :3],
                                  to_fixed_voxels[:3, 3], output_shape=moving_shape, order=0)
    paths = {name: directory / f"{name}.nii.gz" for name in ("fixed", "moving", "labels")}
    io.save_nifti(ct, paths["fixed"], affine=fixed_affine)
    io.save_nifti(moving.astype(np.float32), paths["moving"], affine=moving_affine)
    io.save_nifti(labels.astype(np.uint8), paths["labels"], affine=moving_affine)
    return paths, truth, case["organ_mask"], directory


def _register(*args) -> str:
    status, output = run_program("register", ["compilation_cache=null", *args])
    assert status in (0, None), output[-3000:]
    return output


def test_an_affine_nifti_pair_round_trips(pair):
    paths, truth, fixed_labels, directory = pair
    output = directory / "out"
    printed = _register(f"fixed={paths['fixed']}", f"moving={paths['moving']}",
              f"output={output}", f"labels={paths['labels']}", "method=[affine]",
              "similarity=ncc", "levels=[2,1]", "iterations=[150,100]")
    assert "stage 1/1 affine" in printed and "wrote" in printed
    assert sorted(p.name for p in output.iterdir()) == [
        "displacement.nii.gz", "summary.json", "transform.tfm", "warped.nii.gz",
        "warped_labels.nii.gz",
    ]
    # The ITK affine is the true world map: points land within a fifth of a voxel.
    found = world.read_itk_affine(output / "transform.tfm")
    fixed_affine = io.load_nifti(paths["fixed"]).affine
    grid = np.indices((SIZE,) * 3).reshape(3, -1).T.astype(float)
    points = grid @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    error = np.linalg.norm((points @ found[:3, :3].T + found[:3, 3])
                           - (points @ truth[:3, :3].T + truth[:3, 3]), axis=1)
    assert error.mean() < 0.5  # mm, with 2.5-4 mm voxels
    # The warped moving image and labels land on the fixed ones.
    fixed = io.load_nifti(paths["fixed"]).array
    warped = io.load_nifti(output / "warped.nii.gz").array
    # Compared smoothed: the phantom's voxel-scale texture does not survive two
    # linear resamplings between 3 and 2.5 mm grids (unsmoothed, r = 0.75 in the body).
    body = fixed > -500
    smooth = lambda image: ndi.gaussian_filter(image, 1.0)
    assert np.corrcoef(smooth(fixed)[body], smooth(warped)[body])[0, 1] > 0.98
    warped_labels = io.load_nifti(output / "warped_labels.nii.gz").array
    organs = [c for c in np.unique(fixed_labels) if c > 1]
    dice = np.mean([2 * np.sum((warped_labels == c) & (fixed_labels == c))
                    / (np.sum(warped_labels == c) + np.sum(fixed_labels == c)) for c in organs])
    assert dice > 0.85
    np.testing.assert_allclose(io.load_nifti(output / "warped.nii.gz").affine, fixed_affine)
    # SimpleITK applies the displacement field as medjax's map.
    field = sitk.ReadImage(str(output / "displacement.nii.gz"), sitk.sitkVectorFloat64)
    index = (10, 20, 15)
    point = np.array(field.TransformIndexToPhysicalPoint(index))
    transform = sitk.DisplacementFieldTransform(field)
    lps = np.array([-1.0, -1.0, 1.0])
    expected = (found[:3, :3] @ (point * lps) + found[:3, 3]) * lps
    np.testing.assert_allclose(transform.TransformPoint(tuple(point)), expected, atol=1e-3)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["stages"][0]["last_loss"] < summary["stages"][0]["first_loss"]
