"""Metrics. Per-example ones run on device inside the step; split-level ones
(AUROC, sensitivity, specificity) run on the host over a whole split."""

import jax.numpy as jnp
import numpy as np
import scipy.stats


def accuracy(
    logits: jnp.ndarray, labels: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """1.0 where ``argmax(logits [B, K])`` equals ``labels [B]``, else 0; ``[B]``."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return correct if mask is None else jnp.where(mask, correct, 0.0)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores [N]`` for binary ``labels [N]``.

    Computed as the Mann-Whitney U statistic over (positive, negative) pairs, ties
    counting one half, which equals the trapezoidal ROC area. NaN when one class
    is absent (AUROC is undefined then)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    u = scipy.stats.mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u / (len(positives) * len(negatives)))


def auroc_one_vs_rest(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Macro average over classes of the one-vs-rest AUROC; ``probabilities [N, K]``.

    Classes absent from ``labels`` are left out of the average."""
    per_class = [
        auroc(probabilities[:, k], labels == k) for k in range(probabilities.shape[1])
    ]
    return float(np.nanmean(per_class)) if not np.all(np.isnan(per_class)) else np.nan


def sensitivity_specificity(
    predicted: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """True-positive and true-negative rates of binary ``predicted [N]`` against
    ``labels [N]``; NaN for a rate whose class is absent."""
    predicted = np.asarray(predicted).astype(bool)
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    sensitivity = (predicted & labels).sum() / positives if positives else np.nan
    specificity = (~predicted & ~labels).sum() / negatives if negatives else np.nan
    return float(sensitivity), float(specificity)
