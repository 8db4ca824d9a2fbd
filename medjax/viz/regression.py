"""Figures of regression results: predicted against true values, drawn at each
evaluation of a regression task (``figures/<split>_step_<step>_scatter.png``)."""

import matplotlib.pyplot as plt
import numpy as np

import medjax.viz  # the one backend setting, and save_figure


def plot_predicted_vs_true(
    true: np.ndarray, predicted: np.ndarray, path: str, *, title: str = "",
    quantity: str = "value",
) -> None:
    """A scatter plot of ``predicted [N]`` against ``true [N]`` with the identity
    line, and the MAE, RMSE and R^2 of the points in the legend. Non-finite
    predictions (a diverged model) are left out of the plot and the numbers."""
    true, predicted = np.asarray(true, float), np.asarray(predicted, float)
    finite = np.isfinite(predicted)
    true, predicted = true[finite], predicted[finite]
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    if len(true):
        error = predicted - true
        total = np.sum(np.square(true - true.mean()))
        r2 = 1 - np.sum(np.square(error)) / total if total > 0 else np.nan
        label = (
            f"MAE {np.mean(np.abs(error)):.3g}, RMSE {np.sqrt(np.mean(error**2)):.3g}, "
            f"R² {r2:.3f} (n={len(true)})"
        )
        ax.scatter(true, predicted, s=10, alpha=0.7, label=label)
        low = min(true.min(), predicted.min())
        high = max(true.max(), predicted.max())
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel(f"true {quantity}")
    ax.set_ylabel(f"predicted {quantity}")
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    medjax.viz.save_figure(fig, path, dpi=110, bbox_inches="tight")
