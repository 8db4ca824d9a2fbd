"""Pictures of data: a grid of samples with their masks, lesions and landmarks,
and the same samples after augmentation (``medjax-show``)."""

import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

ORGAN_COLOURS = ListedColormap(
    ["none", "#ffd166", "#118ab2", "#ef476f", "#8338ec", "#f8f9fa", "#e63946", "#06d6a0"]
    [1:]
)


def _slice(volume: np.ndarray, ndim: int) -> np.ndarray:
    """The middle axial slice of a volume; 2D images pass through."""
    return volume if ndim == 2 else volume[..., volume.shape[2] // 2]


def _draw(ax, example: dict, *, title: str) -> None:
    image = example["image"]
    is_cine = "mask" in example
    if is_cine:  # [H, W, T]: first frame (end-diastole)
        ax.imshow(image[..., 0], cmap="gray")
        if "mask" in example:
            ax.contour(example["mask"][0], levels=[0.5, 1.5, 2.5], colors=["r", "y", "c"],
                       linewidths=0.6)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        return
    ndim = image.ndim - 1
    ax.imshow(_slice(image[..., 0], ndim), cmap="gray", vmin=-1, vmax=1)
    if "organ_mask" in example:
        organs = _slice(example["organ_mask"], ndim)
        ax.contour(organs, levels=np.arange(0.5, organs.max() + 1), cmap=ORGAN_COLOURS,
                   linewidths=0.5)
    if "lesion_mask" in example:
        lesions = _slice(example["lesion_mask"], ndim) > 0
        if lesions.any():
            ax.contour(lesions, levels=[0.5], colors="red", linewidths=1.0)
    if "landmarks" in example:
        points, valid = example["landmarks"], example["landmarks_valid"].astype(bool)
        if ndim == 3:  # landmarks within two slices of the one shown
            middle = image.shape[2] // 2
            valid = valid & (np.abs(points[:, 2] - middle) <= 2)
        ax.scatter(points[valid, 1], points[valid, 0], s=10, c="cyan", marker="+")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _cine_channels(batch: dict) -> dict:
    """Cine ``image [B, T, H, W, 1]`` as ``[B, H, W, T]`` so frames move together."""
    return {**batch, "image": np.moveaxis(batch["image"][..., 0], 1, -1)}


def augment_for_display(augment, key, batch: dict) -> dict:
    """``batch`` after ``augment``, moving images, masks and landmarks together."""
    if "mask" in batch:  # cine: the same transform for every frame's mask
        batch = _cine_channels(batch)
        out = augment(key, {"image": batch["image"]})
        masks = [
            augment(key, {"image": batch["image"], "mask": batch["mask"][:, t]},
                    masks=("mask",))["mask"]
            for t in range(batch["mask"].shape[1])
        ]
        return {**batch, "image": out["image"], "mask": np.stack(masks, axis=1)}
    masks = tuple(k for k in ("organ_mask", "lesion_mask") if k in batch)
    points = (("landmarks", "landmarks_valid"),) if "landmarks" in batch else ()
    return dict(augment(key, batch, masks=masks, points=points))


def sample_grid(batch: dict, augmented: dict | None, path: str, title: str) -> None:
    """Writes a PNG: one column per example; the original row, then (if given) the
    augmented row. Organ contours in colour, lesions in red, landmarks as cyan +."""
    batch = jax.device_get(batch)
    if "mask" in batch and batch["image"].ndim == 5:
        batch = _cine_channels(batch)
    rows = [("", batch)] + ([("augmented ", jax.device_get(augmented))] if augmented else [])
    count = len(batch["image"])
    fig, axes = plt.subplots(len(rows), count, figsize=(2.1 * count, 2.5 * len(rows)),
                             squeeze=False)
    for row, (prefix, examples) in enumerate(rows):
        for i in range(count):
            example = {k: np.asarray(v[i]) for k, v in examples.items()}
            label = f"label {int(example['label'])}" if "label" in example else ""
            if "ejection_fraction" in example:
                label += f", EF {float(example['ejection_fraction']):.2f}"
            _draw(axes[row, i], example, title=f"{prefix}{label}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_contours(ax, image: np.ndarray, prediction: np.ndarray | None = None,
                  truth: np.ndarray | None = None, *, vmin=None, vmax=None) -> None:
    """One 2D image in grey with the boundaries of every labelled region: the
    truth in red, the prediction in yellow (as in the seed's prostate figure)."""
    ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
    for labels, colour, width in ((truth, "red", 1.0), (prediction, "yellow", 0.8)):
        if labels is None:
            continue
        for value in np.unique(labels[labels > 0]):
            ax.contour(labels == value, levels=[0.5], colors=colour, linewidths=width)
    ax.axis("off")


def _most_foreground_slice(truth: np.ndarray) -> int:
    """The axial slice (last axis) of a volume that shows the most truth classes
    (the middle one of those that tie): lesions through their middle, organs where
    most of them meet."""
    classes = np.array([len(np.unique(truth[..., k])) for k in range(truth.shape[-1])])
    candidates = np.flatnonzero(classes == classes.max())
    return int(candidates[len(candidates) // 2])


def draw_segmentations(images, truths, predictions, path: str, *, dice=None,
                       title: str = "") -> None:
    """Writes a PNG with one panel per case: ``images [N, *S]`` in grey, truth
    contours in red, predicted contours in yellow; volumes are shown at the axial
    slice that shows the most truth classes. ``dice [N, C]`` titles each panel with
    its mean foreground Dice."""
    count = len(images)
    fig, axes = plt.subplots(1, max(count, 1), figsize=(2.6 * max(count, 1), 2.9),
                             squeeze=False)
    for i in range(count):
        image, truth, prediction = images[i], truths[i], predictions[i]
        label = ""
        if image.ndim == 3:
            k = _most_foreground_slice(truth)
            image, truth, prediction = image[..., k], truth[..., k], prediction[..., k]
            label = f"slice {k}"
        draw_contours(axes[0, i], image, prediction, truth)
        if dice is not None and np.isfinite(dice[i][1:]).any():
            label = f"Dice {np.nanmean(dice[i][1:]):.3f}" + (f", {label}" if label else "")
        axes[0, i].set_title(label, fontsize=8)
    fig.suptitle(f"{title}  (truth red, prediction yellow)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
