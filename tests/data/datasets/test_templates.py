"""The real images shipped in nilearn and dipy load offline, on one grid, with
tissue labels that add up."""

import numpy as np
import pytest

from medjax.data.datasets import templates

pytest.importorskip("nilearn")  # the dev extra installs it: CI runs these


def test_mni152_at_2mm_is_one_grid_with_consistent_tissues():
    template = templates.mni152(2)
    assert set(template) == {"t1", "gm", "wm", "mask"}
    for volume in template.values():
        assert volume.array.shape == (99, 117, 95)
        np.testing.assert_allclose(volume.affine, template["t1"].affine)
    np.testing.assert_allclose(np.diag(template["t1"].affine)[:3], 2.0)
    labels = templates.tissue_labels(template)
    counts = np.bincount(labels.ravel(), minlength=4)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    # Grey and white matter dominate the brain; the T1 is brighter in white matter.
    assert counts[2] + counts[3] > 0.6 * counts[1:].sum()
    t1 = template["t1"].array
    assert t1[labels == 3].mean() > t1[labels == 2].mean() > t1[labels == 1].mean()


def test_a_resolution_nilearn_lacks_is_one_line():
    with pytest.raises(Exception, match="resolution: expected one of"):
        templates.mni152(3)


def test_dipy_t1_slice():
    pytest.importorskip("dipy")
    volume = templates.dipy_t1_slice()
    assert volume.array.shape == (256, 256)
    assert 0.0 <= volume.array.min() < volume.array.max() <= 1.0
