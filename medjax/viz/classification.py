"""Figures of classification results: a confusion matrix and ROC curves, drawn at
each evaluation (``figures/<split>_step_<step>_confusion.png`` and ``_roc.png``)."""

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import sklearn.metrics

import medjax.viz  # the one backend setting, and save_figure


def _save(fig, path: str) -> None:
    medjax.viz.save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_confusion_matrix(
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str = "",
) -> np.ndarray:
    """Draws the confusion matrix of integer ``labels [N]`` (rows, truth) against
    ``predicted [N]`` (columns) with counts and row-normalised rates (recall) in
    each cell; returns the count matrix ``[K, K]``."""
    k = len(class_names)
    matrix = sklearn.metrics.confusion_matrix(labels, predicted, labels=np.arange(k))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.55 * k
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="recall (row-normalised)")
    _save(fig, path)
    return matrix


def plot_roc_curves(
    scores: np.ndarray,
    targets: np.ndarray,
    class_names: Sequence[str],
    path: str,
    title: str = "",
) -> None:
    """ROC curves, one per column of ``scores [N, K]`` against binary
    ``targets [N, K]`` (one-vs-rest indicators, or multi-label targets), with each
    curve's area in the legend. Columns without both classes, or with a
    non-finite score (a diverged model), are left out."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for k, name in enumerate(class_names):
        truth = targets[:, k].astype(bool)
        if truth.all() or not truth.any() or not np.isfinite(scores[:, k]).all():
            continue
        fpr, tpr, _ = sklearn.metrics.roc_curve(truth, scores[:, k])
        area = sklearn.metrics.auc(fpr, tpr)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({area:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:  # no curve: nothing to label
        ax.legend(fontsize=7, loc="lower right", title="AUROC", title_fontsize=7)
    _save(fig, path)
