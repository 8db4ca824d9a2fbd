"""Registration networks: a fixed and a moving image stacked as channels
``[B, *S, 2C]`` in, a transform out, in ``medjax.tasks.registration.task``'s
conventions (fixed voxel -> moving voxel, pull-back displacements in voxels).

- ``affine``: :class:`AffineRegressor`, a CNN regressing an affine matrix
  ``[B, ndim+1, ndim+1]``, initialised to the identity.
- ``voxelmorph``: :class:`VoxelMorph`, a U-Net predicting a dense displacement
  ``[B, *S, ndim]`` (Balakrishnan et al. 2019), or with ``diffeomorphic=True`` a
  stationary velocity field integrated by scaling and squaring (Dalca et al.
  2019).
"""

from medjax.models.registration.affine import AffineRegressor
from medjax.models.registration.voxelmorph import VoxelMorph

__all__ = ["AffineRegressor", "VoxelMorph"]
