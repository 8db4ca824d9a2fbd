"""Registration results in world coordinates, and the files ITK-based tools read.

medjax registers on voxel grids: a transform maps fixed voxel indices to moving
voxel indices (``transforms``). Images carry their geometry as a 4 x 4 affine
from voxel index to world RAS+ millimetres (``medjax.data.io``), so

- the initial voxel map of a pair is ``inv(A_moving) @ A_fixed`` (the images'
  own geometry: two scans of one patient in one scanner frame start aligned);
- a voxel map ``V`` is the world map ``A_moving @ V @ inv(A_fixed)``, from fixed
  world points to moving world points.

ITK (SimpleITK, elastix, ANTs, 3D Slicer) works in LPS+ (x and y negated) and
reads:

- an affine as an ``Insight Transform File V1.0`` text file
  (``AffineTransform_double_3_3``: the 9 entries of the matrix row by row, then
  the translation; ``FixedParameters`` the centre, here 0), mapping fixed
  physical points to moving physical points, as a registration's result does;
- a dense transform as a displacement field image: at every fixed voxel the
  vector from its physical point to the moving physical point, LPS components,
  stored as a NIfTI vector image ``[X, Y, Z, 1, 3]`` with intent ``vector``
  (1007). This is how SimpleITK writes a displacement field and how ANTs stores
  its warps; ITK reads the components as they are (intent ``dispvect`` would
  make it flip them from RAS).

Host-side numpy; 2D images use the 3 x 3 top-left block of their affine.
"""

import os
from pathlib import Path

import numpy as np

from medjax.data.io.volume import format_error

#: RAS <-> LPS: negate x and y.
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_HEADER = "#Insight Transform File V1.0"


def spatial_affine(affine: np.ndarray, ndim: int) -> np.ndarray:
    """The ``[ndim+1, ndim+1]`` voxel -> world map of an image with ``ndim``
    spatial axes (the top-left block and translation of a 4 x 4 affine)."""
    affine = np.asarray(affine, np.float64)
    if ndim == 3:
        return affine
    block = np.eye(3)
    block[:2, :2] = affine[:2, :2]
    block[:2, 2] = affine[:2, 3]
    return block


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A homogeneous ``[ndim+1, ndim+1]`` matrix applied to ``points [..., ndim]``
    in float64 (``medjax.ops.spatial.apply_homogeneous``'s numpy twin, for mm
    coordinates that float32 would round)."""
    matrix = np.asarray(matrix, np.float64)
    ndim = matrix.shape[0] - 1
    return np.asarray(points, np.float64) @ matrix[:ndim, :ndim].T + matrix[:ndim, ndim]


def voxel_spacing(affine: np.ndarray, ndim: int) -> tuple[float, ...]:
    """Voxel size in mm per spatial axis (column norms of the affine)."""
    linear = spatial_affine(affine, ndim)[:ndim, :ndim]
    return tuple(float(v) for v in np.linalg.norm(linear, axis=0))


def initial_voxel_map(fixed_affine: np.ndarray, moving_affine: np.ndarray,
                      ndim: int) -> np.ndarray:
    """Fixed voxel -> moving voxel through world space, ``[ndim+1, ndim+1]``."""
    return np.linalg.inv(spatial_affine(moving_affine, ndim)) @ spatial_affine(
        fixed_affine, ndim
    )


def world_map(voxel_map: np.ndarray, fixed_affine: np.ndarray,
              moving_affine: np.ndarray) -> np.ndarray:
    """The fixed world (RAS mm) -> moving world map of a voxel map."""
    ndim = np.asarray(voxel_map).shape[0] - 1
    return (spatial_affine(moving_affine, ndim) @ np.asarray(voxel_map, np.float64)
            @ np.linalg.inv(spatial_affine(fixed_affine, ndim)))


def _lps(matrix_ras: np.ndarray) -> np.ndarray:
    ndim = matrix_ras.shape[0] - 1
    flip = _FLIP if ndim == 3 else np.diag([-1.0, -1.0, 1.0])
    return flip @ matrix_ras @ flip


def write_itk_affine(path, matrix_ras: np.ndarray) -> Path:
    """Writes a fixed -> moving world map (RAS mm, ``[ndim+1, ndim+1]``, 2D or
    3D) as an ITK affine transform file (``.tfm`` / ``.txt``), in LPS.

    The file is written under a temporary name and renamed."""
    lps = _lps(np.asarray(matrix_ras, np.float64))
    ndim = lps.shape[0] - 1
    numbers = list(lps[:ndim, :ndim].ravel()) + list(lps[:ndim, ndim])
    text = "\n".join([
        _HEADER,
        "#Transform 0",
        f"Transform: AffineTransform_double_{ndim}_{ndim}",
        "Parameters: " + " ".join(repr(float(v)) for v in numbers),
        "FixedParameters: " + " ".join("0" for _ in range(ndim)),
        "",
    ])
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def read_itk_affine(path) -> np.ndarray:
    """Reads an ITK affine transform file back as a RAS world map
    ``[ndim+1, ndim+1]`` (a centre in ``FixedParameters`` is honoured).

    Raises:
        ImageFormatError: not an ITK affine transform file.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise format_error(path, f"cannot read the transform file ({error})") from None
    fields = dict(line.split(":", 1) for line in lines if ":" in line and not
                  line.startswith("#"))
    kind = fields.get("Transform", "").strip()
    if not kind.startswith(("AffineTransform_double_", "AffineTransform_float_")):
        raise format_error(path, f"expected an ITK AffineTransform, found {kind or 'none'!r}")
    ndim = int(kind.rsplit("_", 1)[-1])
    values = np.array(fields["Parameters"].split(), np.float64)
    center = np.array(fields.get("FixedParameters", "0 " * ndim).split(), np.float64)
    if values.size != ndim * ndim + ndim or center.size != ndim:
        raise format_error(path, f"{values.size} parameters for a {ndim}D affine")
    linear = values[: ndim * ndim].reshape(ndim, ndim)
    # ITK: T(x) = A (x - c) + c + t.
    offset = values[ndim * ndim:] + center - linear @ center
    lps = np.eye(ndim + 1)
    lps[:ndim, :ndim], lps[:ndim, ndim] = linear, offset
    return _lps(lps)


def displacement_field_lps(voxel_displacement: np.ndarray, fixed_affine: np.ndarray,
                           moving_affine: np.ndarray) -> np.ndarray:
    """ITK's displacement field of a result: at each fixed voxel ``x``, the LPS
    vector from its world point to the world point of moving voxel
    ``x + d(x)``.

    Args:
        voxel_displacement: ``[*S, ndim]`` pull-back displacement (fixed voxel
            ``x`` reads moving voxel ``x + d(x)``), ndim 2 or 3.
        fixed_affine, moving_affine: the images' 4 x 4 voxel -> RAS affines.

    Returns:
        ``[*S, ndim]`` float32 in mm, LPS components.
    """
    d = np.asarray(voxel_displacement, np.float64)
    ndim = d.shape[-1]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in d.shape[:-1]],
                                indexing="ij"), -1)
    vectors = (apply(spatial_affine(moving_affine, ndim), grid + d)
               - apply(spatial_affine(fixed_affine, ndim), grid))
    vectors[..., :2] *= -1.0  # RAS -> LPS
    return vectors.astype(np.float32)


def save_displacement_nifti(path, field_lps: np.ndarray, fixed_affine: np.ndarray) -> Path:
    """Writes ``field_lps [*S, ndim]`` as ITK reads a displacement field: a NIfTI
    vector image ``[*S, (1,) 1, ndim]`` (5D), intent ``vector``, on the fixed
    image's grid. Temporary name, then rename."""
    import nibabel as nib

    field = np.asarray(field_lps, np.float32)
    ndim = field.shape[-1]
    shape = field.shape[:-1] + (1,) * (3 - ndim) + (1, ndim)
    image = nib.Nifti1Image(field.reshape(shape), np.asarray(fixed_affine, np.float64))
    image.header.set_intent("vector")
    image.header.set_xyzt_units("mm")
    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    temporary = path.with_name(path.name[: -len(suffix)] + ".tmp" + suffix)
    nib.save(image, os.fspath(temporary))
    os.replace(temporary, path)
    return path
