"""Affines shared by the data tests."""

import numpy as np


def oblique_affine(spacing=(2.0, 3.0, 4.0), origin=(-10.0, 20.0, 5.0)):
    """``[4, 4]``: a 36.87-degree rotation about z, scaled by ``spacing``."""
    rotation = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine
