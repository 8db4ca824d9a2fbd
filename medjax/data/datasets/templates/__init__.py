"""Real images that ship inside installed packages, no download: nilearn's
MNI152 ICBM 2009a T1 template with its grey- and white-matter probability maps
and brain mask, and dipy's coronal T1 slice. They need the ``real`` extra
(``pip install -e ".[real]"``); without it a one-line error says so.

Everything comes back as ``medjax.data.io.Volume`` (voxel index order, RAS
affine), like any file medjax reads.
"""

import numpy as np

from medjax.data.io.volume import Volume
from medjax.errors import ConfigError

#: MNI152 resolutions nilearn ships (mm).
MNI_RESOLUTIONS = (1, 2)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"the real-image templates need {module.split('.')[0]}: "
            'pip install -e ".[real]"'
        ) from None


def _volume(image, name: str) -> Volume:
    return Volume(
        array=np.asarray(image.get_fdata(), np.float32),
        affine=np.asarray(image.affine, np.float64),
        source="array",
        path=name,
    )


def mni152(resolution: int = 2) -> dict[str, Volume]:
    """The MNI152 2009a template: ``t1`` (skull-stripped T1, 0..255 a.u.),
    ``gm`` and ``wm`` tissue probabilities in [0, 1], and ``mask`` (brain, 0/1),
    all on one grid (99 x 117 x 95 at 2 mm, 197 x 233 x 189 at 1 mm).

    Raises:
        ConfigError: nilearn is not installed, or a resolution it lacks.
    """
    if resolution not in MNI_RESOLUTIONS:
        raise ConfigError(f"resolution: expected one of {MNI_RESOLUTIONS} mm, got {resolution}")
    datasets = _require("nilearn.datasets")
    loaders = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
        "mask": datasets.load_mni152_brain_mask,
    }
    return {name: _volume(load(resolution=resolution), f"mni152_{name}_{resolution}mm")
            for name, load in loaders.items()}


def tissue_labels(template: dict[str, Volume]) -> np.ndarray:
    """A label map of the template: 0 outside the brain, 1 CSF (the brain mask
    minus grey and white matter: nilearn ships no CSF map), 2 grey matter, 3
    white matter, each voxel the most probable."""
    gm, wm = template["gm"].array, template["wm"].array
    mask = template["mask"].array > 0.5
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
    return np.where(mask, labels, 0).astype(np.uint8)


def dipy_t1_slice() -> Volume:
    """dipy's real coronal T1 slice, 256 x 256 in [0, 1] (no geometry: identity
    affine, 1 unit per pixel)."""
    data = _require("dipy.data")
    path = data.get_fnames(name="t1_coronal_slice")
    return Volume(array=np.load(path).astype(np.float32), affine=np.eye(4), source="array",
                  path=str(path))
