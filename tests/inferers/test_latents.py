"""Latent codes: PCA against scikit-learn."""

import numpy as np

from medjax.inferers.latents import pca_projection


def test_pca_projection_matches_scikit_learn():
    from sklearn.decomposition import PCA

    codes = np.random.default_rng(0).normal(size=(50, 6)) * [5, 3, 1, 1, 1, 1]
    projection, ratio = pca_projection(codes)
    reference = PCA(2).fit(codes)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(projection), np.abs(reference.transform(codes)), atol=1e-8)
    few, _ = pca_projection(codes[:, :1])
    assert few.shape == (50, 2) and not few[:, 1].any()
