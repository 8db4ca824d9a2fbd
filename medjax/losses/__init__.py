"""Per-example losses, one module per task family. Each returns one value per
example and takes a validity ``mask`` so that padded examples contribute exactly
zero; the task reduces them (:func:`masked_mean`).

- ``masking``: :func:`masked_mean`, the reduction;
- ``classification``: :func:`softmax_cross_entropy`, :func:`balanced_class_weights`;
- ``segmentation``: dense cross-entropy, focal, soft Dice, Tversky, Dice + CE and
  ``SEGMENTATION_LOSSES`` by config name;
- ``detection``: :func:`penalty_reduced_focal_loss` (CenterNet), :func:`l1_at_points`;
- ``reconstruction``: :func:`reconstruction_error` (MSE), :func:`kl_divergence`;
- ``registration``: image similarities (SSD, NCC, local NCC, Mattes mutual
  information), :func:`similarity_loss` by name, and the diffusion and bending
  regularisers of a displacement (used as a module: ``losses.registration``).

The public names are re-exported here: ``losses.soft_dice_loss(...)``. Imports no
medjax code.
"""

from medjax.losses.classification import balanced_class_weights, softmax_cross_entropy
from medjax.losses.detection import l1_at_points, penalty_reduced_focal_loss
from medjax.losses.masking import masked_mean
from medjax.losses.reconstruction import kl_divergence, reconstruction_error
from medjax.losses.segmentation import (
    SEGMENTATION_LOSSES,
    dense_cross_entropy,
    dice_ce_loss,
    segmentation_loss,
    soft_dice_loss,
    softmax_focal_loss,
    tversky_loss,
)

__all__ = [
    "balanced_class_weights",
    "SEGMENTATION_LOSSES",
    "dense_cross_entropy",
    "dice_ce_loss",
    "kl_divergence",
    "l1_at_points",
    "masked_mean",
    "penalty_reduced_focal_loss",
    "reconstruction_error",
    "segmentation_loss",
    "soft_dice_loss",
    "softmax_cross_entropy",
    "softmax_focal_loss",
    "tversky_loss",
]
