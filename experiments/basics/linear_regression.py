"""Linear regression in closed form and by gradient descent on the same real data:
scikit-learn's diabetes data (442 patients, 10 baseline variables, target = disease
progression one year later; ships with scikit-learn, no download).

Prints a table of coefficients and mean squared errors (closed form, numpy's
reference, gradient descent) and writes ``linear_regression.png`` next to this file.
Pass ``--mlp-run DIR`` (a ``medjax-train experiment=breast_cancer_mlp`` run
directory) to add its validation curves as a third panel.

    python experiments/basics/linear_regression.py [--mlp-run DIR]
"""

import argparse
import os
import time
from functools import partial

from medjax import viz  # noqa: F401

import jax
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.datasets import load_diabetes

from medjax import metrics
from medjax.engine.fit_arrays import fit_by_gradient_descent
from medjax.engine.reporting import read_metrics
from medjax.models import linear as regression

HERE = os.path.dirname(os.path.abspath(__file__))


def standardised_descent(X, y, **options):
    """Gradient descent on z-scored features, mapped back to the original units
    (``w = w_z / std``, ``b = b_z - sum(w_z mean / std)``): same minimiser, far
    better conditioned (the diabetes columns have a std of 0.048)."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    w_z, b_z, losses = fit_by_gradient_descent((X - mean) / std, y, **options)
    w_z, b_z = np.asarray(w_z, np.float64), float(b_z)
    return w_z / std, b_z - float(np.sum(w_z * mean / std)), np.asarray(losses)


def timed(fn, *args, **kwargs):
    """Result and seconds of a second (compiled) call."""
    jax.block_until_ready(fn(*args, **kwargs))
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args, **kwargs))
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp-run", help="a breast_cancer_mlp run directory to plot")
    parser.add_argument("--output", default=os.path.join(HERE, "linear_regression.png"))
    args = parser.parse_args()

    data = load_diabetes()
    X = data.data.astype(np.float32)
    y = data.target.astype(np.float32)
    names = list(data.feature_names)
    bmi = X[:, names.index("bmi")]
    rows, curves = [], {}

    # One feature: the seed's a and b, numpy.polyfit, gradient descent.
    (a, b), t_closed = timed(regression.simple_linear_regression, bmi, y)
    mse_closed = float(metrics.mean_squared_error(y, a * bmi + b))
    a_ref, b_ref = np.polyfit(bmi.astype(np.float64), y.astype(np.float64), 1)
    gd_options = dict(lr=0.2, steps=200)
    (w_gd, b_gd, losses), t_gd = timed(standardised_descent, bmi[:, None], y, **gd_options)
    curves["1 feature (bmi), SGD lr 0.2"] = (losses, mse_closed)
    rows.append(("bmi -> progression", "closed form (seed a, b)", [a], b, mse_closed,
                 float(metrics.r2_score(y, a * bmi + b)), t_closed))
    rows.append(("", "numpy.polyfit", [a_ref], b_ref, None, None, None))
    mse_gd = float(metrics.mean_squared_error(y, w_gd[0] * bmi + b_gd))
    rows.append(("", f"gradient descent ({gd_options['steps']} SGD steps)", w_gd, b_gd,
                 mse_gd, float(metrics.r2_score(y, w_gd[0] * bmi + b_gd)), t_gd))

    # All ten features: the normal equation, numpy.linalg.lstsq, gradient descent.
    (w, b), t_closed = timed(regression.normal_equation, X, y)
    mse_closed = float(metrics.mean_squared_error(y, regression.predict(X, w, b)))
    design = np.hstack([X, np.ones((len(X), 1))]).astype(np.float64)
    reference = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    rows.append(("10 features -> progression", "normal equation (lstsq)", w, b,
                 mse_closed, float(metrics.r2_score(y, regression.predict(X, w, b))),
                 t_closed))
    rows.append(("", "numpy.linalg.lstsq (float64)", reference[:-1], reference[-1],
                 float(np.mean((design @ reference - y) ** 2)), None, None))
    for label, options in [
        ("SGD lr 0.2", dict(lr=0.2, steps=5000)),
        ("Adam lr 0.1", dict(lr=0.1, steps=5000, optimizer=optax.adam)),
        ("SGD+momentum 0.9, lr 0.1",
         dict(lr=0.1, steps=500, optimizer=partial(optax.sgd, momentum=0.9))),
    ]:
        (w_gd, b_gd, losses), t_gd = timed(standardised_descent, X, y, **options)
        curves[f"10 features, {label}"] = (losses, mse_closed)
        prediction = X @ w_gd + b_gd
        rows.append(("", f"gradient descent ({options['steps']} steps, {label})",
                     w_gd, b_gd, float(metrics.mean_squared_error(y, prediction)),
                     float(metrics.r2_score(y, prediction)), t_gd))

    # The table (markdown), coefficients in the data's original units.
    print("| data | method | w (" + ", ".join(names[:3]) + ", ...) | max abs w - w_closed"
          " | b | MSE | R^2 | seconds |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    closed = None
    for data_name, method, w, b, mse, r2, seconds in rows:
        w = np.atleast_1d(np.asarray(w, np.float64))
        if data_name:
            closed = w
        shown = ", ".join(f"{v:.2f}" for v in w[:3]) + (", ..." if len(w) > 3 else "")
        diff = np.abs(w - closed).max()
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        print(f"| {data_name} | {method} | {shown} | {diff:.2g} | {b:.3f} | "
              f"{fmt(mse, '.3f')} | {fmt(r2, '.4f')} | {fmt(seconds, '.4f')} |")

    panels = 3 if args.mlp_run else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    a, b = rows[0][2][0], rows[0][3]
    axes[0].scatter(bmi, y, s=8, alpha=0.5, label="patients")
    grid = np.linspace(bmi.min(), bmi.max(), 2)
    axes[0].plot(grid, a * grid + b, "C3", lw=2, label=f"closed form: {a:.0f} x + {b:.0f}")
    a_gd, b_gd = rows[2][2][0], rows[2][3]
    axes[0].plot(grid, a_gd * grid + b_gd, "k--", lw=1,
                 label=f"gradient descent: {a_gd:.0f} x + {b_gd:.0f}")
    axes[0].set(xlabel="bmi (scaled, scikit-learn units)",
                ylabel="disease progression after 1 year",
                title="diabetes: one feature")
    axes[0].legend(fontsize=8)
    for label, (losses, mse_closed) in curves.items():
        # float32 resolves the MSE to about 1e-7 of itself: the floor of the curves.
        gap = np.maximum((losses - mse_closed) / mse_closed, 1e-7)
        axes[1].semilogy(np.arange(len(losses)), gap, label=label)
    axes[1].set(xlabel="step", ylabel="(MSE(step) - closed-form MSE) / closed-form MSE",
                title="gradient descent converges to the closed form")
    axes[1].legend(fontsize=8)
    if args.mlp_run:
        records = read_metrics(os.path.join(args.mlp_run, "metrics.jsonl"))
        validation = [r for r in records if r["split"] == "validation"]
        steps = [r["step"] for r in validation]
        for key in ("accuracy", "auroc"):
            axes[2].plot(steps, [r[key] for r in validation], "o-", label=f"validation {key}")
        train = [r for r in records if r["split"] == "train"]
        axes[2].plot([r["step"] for r in train], [r["accuracy"] for r in train], alpha=0.5,
                     label="train accuracy (running)")
        axes[2].set(xlabel="step", ylim=(0.85, 1.005),
                    title="MLP on Wisconsin breast cancer")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
