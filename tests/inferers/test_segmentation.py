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


# ------------------------------------------------- geometry of written masks
# Every test below writes a phantom in some orientation, segments it through the
# real path (io.load_image -> Segmenter: reorientation, slicing, resampling ->
# io.save_like -> overlay) with the stand-in model of tests.inferers.
# phantom_geometry, reads the written mask back and compares it, voxel by voxel
# through the mask's own affine, with the truth in world coordinates.

import itertools  # noqa: E402

import pytest  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from medjax.inferers.segmentation import segment_file  # noqa: E402
from tests.inferers import phantom_geometry as pg  # noqa: E402

SHAPE = (16, 21, 13)  # odd, non-square, non-cubic
SPACING = np.array([2.0, 1.5, 2.5])
OFFSET, RADIUS = 8.0, 4.0  # mm: structures 8 mm from the centre along each axis


def _signed_permutations():
    """All 48 axis orderings and flips: ``[3, 3]`` matrices with one +-1 a column."""
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            matrix = np.zeros((3, 3))
            for column, (row, sign) in enumerate(zip(order, signs)):
                matrix[row, column] = sign
            yield matrix


def _codes(matrix):
    import nibabel

    return "".join(nibabel.aff2axcodes(np.r_[np.c_[matrix, np.zeros(3)], [[0, 0, 0, 1]]]))


ORIENTATIONS = list(_signed_permutations())
OBLIQUE = Rotation.from_rotvec(np.deg2rad(15) * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()


def _affine(rotation, origin=(-31.0, 17.0, 52.0)):
    affine = np.eye(4)
    affine[:3, :3] = rotation * SPACING  # column j: direction of index axis j
    affine[:3, 3] = origin
    # What NIfTI's float32 sform holds, so voxels on a structure's edge are
    # judged from the same affine on both sides.
    return affine.astype(np.float32).astype(np.float64)


def _predict_nifti(tmp_path, affine, spatial_dims, spacing=None, shape=SHAPE):
    image, truth = pg.phantom(affine, shape, offset=OFFSET, radius=RADIUS,
                              spatial_dims=spatial_dims)
    io.save_nifti(image, tmp_path / "image.nii.gz", affine=affine)
    segmenter = pg.stand_in_segmenter(spatial_dims, spacing)
    _, labels, written = segment_file(
        segmenter, str(tmp_path / "image.nii.gz"), str(tmp_path / "mask.nii.gz"),
        str(tmp_path / "overlay.png"),
    )
    mask = io.load_nifti(written)
    expected = pg.labels_in_world(mask, pg.centre(affine, shape), offset=OFFSET,
                                  radius=RADIUS, spatial_dims=spatial_dims)
    return mask, expected, truth


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("rotation", ORIENTATIONS, ids=[_codes(m) for m in ORIENTATIONS])
def test_nifti_mask_lands_on_the_structures_in_every_axis_order(tmp_path, rotation, spatial_dims):
    affine = _affine(rotation)
    mask, expected, truth = _predict_nifti(tmp_path, affine, spatial_dims)
    assert mask.array.shape == SHAPE
    np.testing.assert_allclose(mask.affine, affine)
    labels = range(5 if spatial_dims == 2 else 9)
    assert set(np.unique(expected)) == set(labels)  # every structure is there
    np.testing.assert_array_equal(expected, truth)
    np.testing.assert_array_equal(mask.array, expected)
    assert (tmp_path / "overlay.png").is_file()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("rotation", [ORIENTATIONS[0], ORIENTATIONS[13], ORIENTATIONS[30],
                                      ORIENTATIONS[47]], ids=["RAS", "oblique2", "oblique3", "oblique4"])
def test_nifti_mask_lands_on_the_structures_of_an_oblique_volume(tmp_path, rotation, spatial_dims):
    affine = _affine(OBLIQUE @ rotation)
    mask, expected, _ = _predict_nifti(tmp_path, affine, spatial_dims)
    assert set(np.unique(expected)) == set(range(5 if spatial_dims == 2 else 9))
    np.testing.assert_array_equal(mask.array, expected)


@pytest.mark.parametrize("rotation", [ORIENTATIONS[9], OBLIQUE @ ORIENTATIONS[22]], ids=["permuted", "oblique"])
def test_resampled_to_the_training_spacing_and_back_the_mask_stays_in_place(tmp_path, rotation):
    affine = _affine(rotation)
    mask, expected, _ = _predict_nifti(tmp_path, affine, 3, spacing=(1.25, 1.25, 1.25))
    points = pg.world_points(mask.affine, SHAPE)
    for label in range(1, 9):  # there and back moves an edge voxel at most
        predicted, true = mask.array == label, expected == label
        dice = 2 * (predicted & true).sum() / (predicted.sum() + true.sum())
        shift = np.linalg.norm(points[predicted].mean(0) - points[true].mean(0))
        assert dice > 0.95 and shift < 0.3, (label, dice, shift)


def test_png_mask_is_not_transposed(tmp_path):
    from PIL import Image

    rows, columns = 23, 40  # (H, W), taken as displayed
    truth = np.zeros((rows, columns), np.int64)
    truth[2:6, 3:9] = 1  # top left: label 1
    truth[3:7, 30:37] = 2  # top right: 1 + "left"
    truth[15:20, 4:8] = 3  # bottom left: 1 + 2 * "posterior"
    truth[17:21, 25:38] = 4
    Image.fromarray(np.where(truth > 0, 255, 0).astype(np.uint8)).save(tmp_path / "image.png")
    _, _, written = segment_file(pg.stand_in_segmenter(2, threshold=0), str(tmp_path / "image.png"),
                                 str(tmp_path / "mask.png"), str(tmp_path / "overlay.png"))
    np.testing.assert_array_equal(io.load_png(written).array, truth)


def _dicom_phantom_series(directory, datasets, affine, shape):
    """Rewrites ``datasets`` (one per slice k, in slice order) with the pixels of
    the 2D phantom on the grid ``affine``, ``shape`` and saves them."""
    image, truth = pg.phantom(affine, shape, offset=OFFSET_DICOM, radius=RADIUS_DICOM,
                              spatial_dims=2)
    directory.mkdir()
    for k, dataset in enumerate(datasets):
        raw = np.round(image[:, :, k].T + 1024).astype(np.uint16)  # (rows, columns)
        dataset.set_pixel_data(raw, "MONOCHROME2", 16)
        dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
        dataset.save_as(directory / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
    return truth


OFFSET_DICOM, RADIUS_DICOM = 2.0, 1.1  # mm: pydicom's tiny CT is 7.8 mm across


def _check_dicom_prediction(tmp_path, series):
    source = io.load_dicom_series(series)
    _, _, written = segment_file(pg.stand_in_segmenter(2), str(series),
                                 str(tmp_path / "mask"), str(tmp_path / "overlay.png"))
    mask = io.load_dicom_series(written)
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    expected = pg.labels_in_world(mask, pg.centre(source.affine, source.spatial_shape),
                                  offset=OFFSET_DICOM, radius=RADIUS_DICOM, spatial_dims=2)
    assert set(np.unique(expected)) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(mask.array, expected)


def test_dicom_mask_lands_on_the_structures_of_a_real_ct_series(tmp_path):
    import os

    import pydicom

    # pydicom's real 5-slice CT series (16 x 16, 0.49 mm pixels, 2.5 mm apart),
    # its pixels replaced by the phantom on the series' own geometry.
    real = os.path.join(os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm")),
                        "dicomdirtests", "98892001", "CT5N")
    volume = io.load_dicom_series(real)
    assert volume.spatial_shape == (16, 16, 5)
    datasets = [pydicom.dcmread(os.path.join(real, f)) for f in sorted(os.listdir(real))]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    _dicom_phantom_series(tmp_path / "ct", datasets, volume.affine, volume.spatial_shape)
    _check_dicom_prediction(tmp_path, tmp_path / "ct")


def test_dicom_mask_lands_on_the_structures_of_an_oblique_sagittal_series(tmp_path):
    import os

    import pydicom

    # Sagittal slices tilted 10 degrees (rows along -y.., columns along -z), 9 x 14
    # pixels of 0.5 x 0.6 mm, slices 1.2 mm apart along the normal, files in a
    # shuffled order.
    template = pydicom.dcmread(os.path.join(
        os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm")),
        "dicomdirtests", "98892001", "CT5N", "2062"))
    tilt = Rotation.from_rotvec(np.deg2rad(10) * np.array([0.0, 0.0, 1.0])).as_matrix()
    row_cosine, column_cosine = tilt @ [0, 1, 0], tilt @ [0, 0, -1]  # LPS
    normal = np.cross(row_cosine, column_cosine)
    rows, columns, slices = 9, 14, 7
    datasets, lps = [], np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row_cosine * 0.6, column_cosine * 0.5, normal * 1.2
    lps[:3, 3] = [12.0, -40.0, 30.0]
    for k in range(slices):
        dataset = pydicom.dcmread(template.filename)
        dataset.ImageOrientationPatient = [*row_cosine, *column_cosine]
        dataset.ImagePositionPatient = list(lps[:3, 3] + k * lps[:3, 2])
        dataset.PixelSpacing = [0.5, 0.6]  # row spacing, column spacing
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()
        datasets.append(dataset)
    affine = io.LPS_TO_RAS @ lps
    _dicom_phantom_series(tmp_path / "mr", datasets, affine, (columns, rows, slices))
    assert io.load_dicom_series(tmp_path / "mr").spatial_shape == (columns, rows, slices)
    _check_dicom_prediction(tmp_path, tmp_path / "mr")
