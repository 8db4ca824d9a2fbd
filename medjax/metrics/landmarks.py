"""Landmark localisation metrics, host side, mask-aware.

Conventions (those of the ISBI 2015 cephalometric challenge and its successors,
with presence added because the phantoms' landmarks can be absent):

- The radial error of a landmark is the Euclidean distance between predicted and
  true coordinates, in mm when a voxel ``spacing`` is given (per axis, so
  anisotropic voxels count correctly), else in voxels.
- Only landmarks present in the truth (``truth_valid``) enter the mean radial
  error (MRE) and the success detection rates (SDR: the share of them within
  ``r`` mm). The predicted point enters whatever the model's presence decision
  says, so declaring a hard landmark absent cannot improve the MRE; a present
  landmark the model calls absent is counted in ``missed`` as well.
- A landmark absent in the truth and called present is a false positive
  (``false_positives``); absent landmarks never have an error.

Arrays are per example and per landmark: ``[N, L, ndim]`` points, ``[N, L]``
flags. Imports no medjax code.
"""

from collections.abc import Sequence

import numpy as np

#: Success detection radii in mm (the issue's 2, 2.5, 3 and 4 mm).
SDR_RADII_MM = (2.0, 2.5, 3.0, 4.0)


def radial_errors(
    predicted: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Euclidean distances between predicted and true points.

    Args:
        predicted, truth: ``[..., ndim]`` voxel coordinates.
        spacing: ``[ndim]`` voxel size (mm per index step along each axis);
            None: distances in voxels.

    Returns:
        ``[...]`` float64 distances (mm with a spacing, else voxels).
    """
    offset = np.asarray(predicted, np.float64) - np.asarray(truth, np.float64)
    if spacing is not None:
        offset = offset * np.asarray(spacing, np.float64)
    return np.sqrt(np.sum(np.square(offset), axis=-1))


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def sdr_name(radius: float) -> str:
    """``sdr_2mm``, ``sdr_2.5mm``: the metric name of a radius."""
    return f"sdr_{radius:g}mm"


def landmark_metrics(
    predicted: np.ndarray,
    truth: np.ndarray,
    truth_valid: np.ndarray,
    predicted_present: np.ndarray | None = None,
    *,
    spacing: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    radii: Sequence[float] = SDR_RADII_MM,
) -> dict[str, float]:
    """Split-level landmark metrics (see the module docstring).

    Args:
        predicted, truth: ``[N, L, ndim]`` voxel coordinates.
        truth_valid: ``[N, L]`` bool, the landmark is present in the truth.
        predicted_present: ``[N, L]`` bool, the model calls it present (None:
            every landmark is called present).
        spacing: ``[ndim]`` mm per voxel; None: the "mm" metrics are in voxels.
        names: ``L`` landmark names for the per-landmark metrics (default
            ``landmark_<l>``).
        radii: the SDR radii, in the unit of ``spacing``.

    Returns:
        ``mre`` (mm), ``mre_voxels``, ``mre_<name>`` and ``mre_voxels_<name>``
        per landmark, ``sdr_<r>mm`` per radius, ``false_positives`` and
        ``missed`` (counts over the split), ``presence_accuracy`` and
        ``num_present`` (landmarks present in the truth). NaN where no
        landmark is present.
    """
    truth_valid = np.asarray(truth_valid, bool)
    count = truth_valid.shape[1]
    names = (
        list(names) if names is not None else [f"landmark_{k}" for k in range(count)]
    )
    if len(names) != count:
        raise ValueError(f"landmark_metrics: {len(names)} names for {count} landmarks")
    if predicted_present is None:
        predicted_present = np.ones_like(truth_valid)
    predicted_present = np.asarray(predicted_present, bool)
    errors = radial_errors(predicted, truth, spacing)  # [N, L]
    voxel_errors = radial_errors(predicted, truth)
    result = {
        "mre": _mean(errors[truth_valid]),
        "mre_voxels": _mean(voxel_errors[truth_valid]),
    }
    for k, name in enumerate(names):
        present = truth_valid[:, k]
        result[f"mre_{name}"] = _mean(errors[present, k])
        result[f"mre_voxels_{name}"] = _mean(voxel_errors[present, k])
    present_errors = errors[truth_valid]
    for radius in radii:
        result[sdr_name(radius)] = _mean((present_errors <= radius).astype(np.float64))
    result["false_positives"] = float(np.sum(predicted_present & ~truth_valid))
    result["missed"] = float(np.sum(~predicted_present & truth_valid))
    result["presence_accuracy"] = _mean(
        (predicted_present == truth_valid).astype(float)
    )
    result["num_present"] = float(np.sum(truth_valid))
    return result
