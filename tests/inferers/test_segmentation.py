import numpy as np
import pydicom

from medjax.data import io
from medjax.inferers.segmentation import to_display_orientation


def test_a_standard_axial_dicom_slice_is_displayed_as_pydicom_shows_it():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    volume = io.load_dicom_series(path)  # (column, row, slice) index order
    shown, forward, back = to_display_orientation(volume)
    expected = pydicom.pixels.apply_rescale(dataset.pixel_array, dataset)  # (row, column)
    np.testing.assert_array_equal(shown.array[..., 0], expected.astype(np.float32))
    np.testing.assert_array_equal(back(forward(volume.array)), volume.array)


def test_reorientation_keeps_every_voxel_at_its_world_position():
    rng = np.random.default_rng(0)
    affine = np.array([[2.0, 0, 0, -30], [0, 0, 3.0, 10], [0, -1.5, 0, 5], [0, 0, 0, 1]])
    volume = io.Volume(array=rng.normal(size=(5, 7, 4)).astype(np.float32), affine=affine,
                       source="nifti")
    shown, forward, back = to_display_orientation(volume)
    np.testing.assert_array_equal(shown.array, forward(volume.array))
    np.testing.assert_array_equal(back(shown.array), volume.array)
    # columns of the new affine point posterior (-y), left (-x), superior (+z)
    directions = np.sign(shown.affine[:3, :3])
    np.testing.assert_array_equal(directions, [[0, -1, 0], [-1, 0, 0], [0, 0, 1]])
    inverse = np.linalg.inv(affine)
    for index in np.ndindex(shown.array.shape):
        original = np.round(inverse @ shown.affine @ np.array([*index, 1.0]))[:3].astype(int)
        assert shown.array[index] == volume.array[tuple(original)]
