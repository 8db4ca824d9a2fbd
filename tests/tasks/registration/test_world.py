"""Registration results in world coordinates, checked against SimpleITK: the ITK
affine file, the displacement-field NIfTI, and resampling through both."""

import numpy as np
import pytest

from medjax.tasks.registration import world

sitk = pytest.importorskip("SimpleITK")  # in the dev extra: CI runs these


def _affine(spacing, origin, rotation=0.0):
    c, s = np.cos(rotation), np.sin(rotation)
    linear = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = linear, origin
    return matrix


FIXED = _affine((1.0, 1.5, 2.0), (-20.0, 10.0, 5.0), 0.2)
MOVING = _affine((2.0, 1.0, 1.0), (15.0, -5.0, -3.0), -0.1)
VOXEL_MAP = np.array([
    [1.02, 0.05, 0.0, 1.5],
    [-0.03, 0.97, 0.02, -2.0],
    [0.01, 0.0, 1.05, 0.7],
    [0.0, 0.0, 0.0, 1.0],
])


def _ras_to_lps(points):
    return points * np.array([-1.0, -1.0, 1.0])


def _voxel_to_world(affine, voxels):
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def test_itk_affine_file_maps_fixed_to_moving_points_as_simpleitk_reads_it(tmp_path):
    matrix = world.world_map(VOXEL_MAP, FIXED, MOVING)
    path = world.write_itk_affine(tmp_path / "transform.tfm", matrix)
    transform = sitk.ReadTransform(str(path))
    voxels = np.random.default_rng(0).uniform(0, 20, size=(5, 3))
    fixed_world = _voxel_to_world(FIXED, voxels)
    expected = _voxel_to_world(MOVING, voxels @ VOXEL_MAP[:3, :3].T + VOXEL_MAP[:3, 3])
    for point, target in zip(_ras_to_lps(fixed_world), _ras_to_lps(expected)):
        np.testing.assert_allclose(transform.TransformPoint(tuple(point)), target, atol=1e-6)
    np.testing.assert_allclose(world.read_itk_affine(path), matrix, atol=1e-12)


def test_reads_a_centred_affine_written_by_simpleitk(tmp_path):
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((1.1, 0.1, 0.0, 0.0, 0.9, 0.2, 0.05, 0.0, 1.0))
    transform.SetTranslation((3.0, -1.0, 2.0))
    transform.SetCenter((10.0, 20.0, -5.0))
    sitk.WriteTransform(transform, str(tmp_path / "t.tfm"))
    ras = world.read_itk_affine(tmp_path / "t.tfm")
    point_lps = np.array([4.0, -7.0, 12.0])
    mapped_ras = ras[:3, :3] @ _ras_to_lps(point_lps) + ras[:3, 3]
    np.testing.assert_allclose(_ras_to_lps(mapped_ras), transform.TransformPoint(tuple(point_lps)),
                               atol=1e-9)
    (tmp_path / "bad.tfm").write_text("#Insight Transform File V1.0\nTransform: Euler3DTransform\n")
    with pytest.raises(Exception, match="bad.tfm: expected an ITK AffineTransform"):
        world.read_itk_affine(tmp_path / "bad.tfm")


def test_displacement_field_nifti_is_the_transform_simpleitk_applies(tmp_path):
    shape = (6, 5, 4)
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), -1)
    mapped = grid @ VOXEL_MAP[:3, :3].T + VOXEL_MAP[:3, 3] + rng.normal(0, 0.3, shape + (3,))
    field = world.displacement_field_lps(mapped - grid, FIXED, MOVING)
    path = world.save_displacement_nifti(tmp_path / "displacement.nii.gz", field, FIXED)
    image = sitk.ReadImage(str(path), sitk.sitkVectorFloat64)
    # The transform takes the image's buffer: read it a second time for it.
    transform = sitk.DisplacementFieldTransform(sitk.ReadImage(str(path), sitk.sitkVectorFloat64))
    for index in [(0, 0, 0), (3, 2, 1), (5, 4, 3)]:
        point = image.TransformIndexToPhysicalPoint(index)
        expected = _ras_to_lps(_voxel_to_world(MOVING, mapped[index]))
        np.testing.assert_allclose(transform.TransformPoint(point), expected, atol=1e-4)
    # The image's physical points are the fixed image's (the field lives on its grid).
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((3, 2, 1)),
                               _ras_to_lps(_voxel_to_world(FIXED, np.array([3.0, 2.0, 1.0]))),
                               atol=1e-5)


def test_2d_geometry_uses_the_in_plane_block(tmp_path):
    fixed = np.diag([0.5, 2.0, 3.0, 1.0])
    fixed[:3, 3] = (1.0, 2.0, 3.0)
    block = world.spatial_affine(fixed, 2)
    np.testing.assert_allclose(block, [[0.5, 0, 1.0], [0, 2.0, 2.0], [0, 0, 1]])
    assert world.voxel_spacing(fixed, 2) == (0.5, 2.0)
    voxel_map = np.array([[1.0, 0.1, 2.0], [0.0, 1.0, -1.0], [0, 0, 1]])
    path = world.write_itk_affine(tmp_path / "t2.tfm", world.world_map(voxel_map, fixed, fixed))
    transform = sitk.ReadTransform(str(path))
    assert transform.GetDimension() == 2
    voxel = np.array([3.0, 4.0])
    target = block[:2, :2] @ (voxel_map[:2, :2] @ voxel + voxel_map[:2, 2]) + block[:2, 2]
    source = block[:2, :2] @ voxel + block[:2, 2]
    np.testing.assert_allclose(transform.TransformPoint(tuple(-source)), -target, atol=1e-9)
