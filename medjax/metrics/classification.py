"""Classification metrics: per-example :func:`accuracy` on device; the
split-level ones (AUROC, average precision, sensitivity and specificity, balanced
accuracy) on the host over a whole split; ``count_nonfinite`` finds the scores
a diverged model leaves them undefined by."""

import jax.numpy as jnp
import numpy as np
import scipy.stats


def accuracy(
    logits: jnp.ndarray, labels: jnp.ndarray, *, mask: jnp.ndarray | None = None
) -> jnp.ndarray:
    """1.0 where ``argmax(logits [B, K])`` equals ``labels [B]``, else 0; ``[B]``."""
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return correct if mask is None else jnp.where(mask, correct, 0.0)


def count_nonfinite(scores: np.ndarray) -> int:
    """The number of examples of ``scores [N, ...]`` with a NaN or infinite
    score: split metrics of such scores are NaN, and the tasks say so."""
    scores = np.asarray(scores)
    return int((~np.isfinite(scores.reshape(len(scores), -1))).any(-1).sum())


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores [N]`` for binary ``labels [N]``.

    Computed as the Mann-Whitney U statistic over (positive, negative) pairs, ties
    counting one half, which equals the trapezoidal ROC area. NaN when one class
    is absent (AUROC is undefined then) or a score is not finite (NaN or inf:
    the outputs of a diverged model rank nothing; ``count_nonfinite`` says how
    many)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0 or count_nonfinite(scores):
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


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels [N]`` of their recall (the
    fraction of the class predicted as itself), scikit-learn's
    ``balanced_accuracy_score``: chance level is ``1 / K`` whatever the class
    frequencies."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    recalls = [np.mean(predicted[labels == k] == k) for k in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else float("nan")


def multilabel_auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over labels of the AUROC of ``scores [N, L]`` for binary
    ``targets [N, L]`` (MedMNIST's AUC for multi-label tasks); labels with one
    class only are left out."""
    per_label = [auroc(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    return float(np.nanmean(per_label)) if not np.all(np.isnan(per_label)) else np.nan



def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct
    score thresholds, highest first (tied scores enter together). NaN when there
    are no positives or a score is not finite (NaN would sort anywhere)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    if not labels.any() or count_nonfinite(scores):
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
