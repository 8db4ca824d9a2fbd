"""A Medical Segmentation Decathlon folder as random-access sources, one per split:
NIfTI cases read, resampled, normalised and cropped to one static shape."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medjax.data.io.nifti import load_nifti
from medjax.data.io.volume import PathLike, Volume, format_error, one_line
from medjax.data.preprocess import (
    center_crop_or_pad,
    ct_window,
    resample_to_spacing,
    zscore,
)


def _case_path(root: Path, entry: str) -> Path:
    return root / Path(entry.removeprefix("./"))


class DecathlonSource:
    """One split of a Medical Segmentation Decathlon folder, as a random-access
    source for grain.

    The folder holds ``dataset.json`` (with ``training``: a list of
    ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``,
    ``labels``: ``{"0": "background", ...}`` and ``modality``: ``{"0": "CT"}``),
    ``imagesTr/`` and ``labelsTr/``. The training list is split into ``train`` and
    ``validation`` by a permutation seeded with ``seed``; ``validation`` gets
    ``round(n * validation_fraction)`` cases (at least one when the fraction is
    positive and n > 1); ``"all"`` is the whole list. Cases keep the list's order
    within a split.

    Each example is resampled to ``target_spacing`` (if given), normalised, then
    centre-cropped or padded to ``shape`` (image with its minimum, mask with 0),
    so every example has the same static shape:

    * ``image``: float32 ``[*shape, C]`` (C = 1, or the modalities of a 4D image),
    * ``mask``: int32 ``shape``,
    * ``spacing``: float32 ``[ndim]``, the voxel size after resampling.

    Normalisation: ``"ct"`` (``ct_window`` with ``window=(center, width)``),
    ``"zscore"`` (per channel, over the whole image) or ``"none"``; the default
    picks ``"ct"`` when the modality is CT, else ``"zscore"``.

    Missing ``dataset.json``, a listed file that does not exist, or an image whose
    shape differs from its label's raise :class:`ImageFormatError` naming the file
    when the source is made (shapes are read from the headers only).
    """

    def __init__(
        self,
        root: PathLike,
        *,
        shape: Sequence[int],
        split: str = "train",
        validation_fraction: float = 0.2,
        seed: int = 0,
        target_spacing: float | Sequence[float] | None = None,
        normalization: str | None = None,
        window: tuple[float, float] = (40.0, 400.0),
    ):
        self.root = Path(root)
        description = self.root / "dataset.json"
        if not description.is_file():
            raise format_error(
                description,
                "missing (a Decathlon folder has dataset.json, "
                "imagesTr/ and labelsTr/)",
            )
        try:
            meta = json.loads(description.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise format_error(
                description, f"not valid JSON ({one_line(error)})"
            ) from None
        training = meta.get("training")
        if not isinstance(training, list) or not training:
            raise format_error(
                description, "has no 'training' list of image/label pairs"
            )
        cases = []
        for number, entry in enumerate(training):
            if not isinstance(entry, Mapping) or not {"image", "label"} <= entry.keys():
                raise format_error(
                    description, f"training[{number}] lacks 'image'/'label'"
                )
            image = _case_path(self.root, entry["image"])
            cases.append((image, _case_path(self.root, entry["label"])))
        self.labels = {int(k): str(v) for k, v in dict(meta.get("labels", {})).items()}
        self.modality = {
            int(k): str(v) for k, v in dict(meta.get("modality", {})).items()
        }
        self.name = str(meta.get("name", self.root.name))

        if split not in ("train", "validation", "all"):
            raise ValueError(f"split must be train, validation or all, got {split!r}")
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {validation_fraction}"
            )
        count = len(cases)
        num_validation = int(round(count * validation_fraction))
        if validation_fraction > 0 and count > 1:
            num_validation = min(max(num_validation, 1), count - 1)
        permutation = np.random.default_rng(seed).permutation(count)
        chosen = {
            "validation": permutation[:num_validation],
            "train": permutation[num_validation:],
            "all": permutation,
        }[split]
        self.cases = [cases[n] for n in sorted(chosen)]

        self.shape = tuple(int(s) for s in shape)
        self.target_spacing = target_spacing
        if normalization is None:
            is_ct = any(v.upper() == "CT" for v in self.modality.values())
            normalization = "ct" if is_ct else "zscore"
        if normalization not in ("ct", "zscore", "none"):
            raise ValueError(
                f"normalization must be ct, zscore or none, got {normalization!r}"
            )
        self.normalization = normalization
        self.window = tuple(float(w) for w in window)
        self._check_cases()

    def _check_cases(self) -> None:
        import nibabel as nib

        for image_path, label_path in self.cases:
            for file in (image_path, label_path):
                if not file.is_file():
                    raise format_error(file, "listed in dataset.json but missing")
            image_shape = nib.load(image_path).shape
            label_shape = nib.load(label_path).shape
            if tuple(image_shape[: len(label_shape)]) != tuple(label_shape):
                raise format_error(
                    label_path,
                    f"shape {tuple(label_shape)} does not match image "
                    f"{tuple(image_shape)}",
                )
            if len(label_shape) != len(self.shape):
                raise format_error(
                    label_path,
                    f"has {len(label_shape)} spatial axes but shape= "
                    f"has {len(self.shape)}",
                )

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return (
            f"DecathlonSource({os.fspath(self.root)!r}, {len(self)} cases, "
            f"shape={self.shape})"
        )

    def _normalize(self, image: np.ndarray) -> np.ndarray:
        if self.normalization == "ct":
            return ct_window(image, *self.window)
        if self.normalization == "zscore":
            return np.stack(
                [zscore(image[..., c]) for c in range(image.shape[-1])], axis=-1
            )
        return image.astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        image_path, label_path = self.cases[index]
        image = load_nifti(image_path)
        label = load_nifti(label_path)
        ndim = label.array.ndim
        if image.array.shape[:ndim] != label.array.shape:
            raise format_error(
                label_path,
                f"shape {label.array.shape} does not match image {image.array.shape}",
            )
        labels = np.asarray(label.array)
        if not np.issubdtype(labels.dtype, np.integer):
            labels = np.rint(labels).astype(np.int32)
        # The label takes the image's geometry: some released labels' headers differ
        # from their image's by rounding, which must not change the resampled shape.
        label = Volume(labels, image.affine)
        if self.target_spacing is not None:
            image = resample_to_spacing(image, self.target_spacing, order=1)
            label = resample_to_spacing(label, self.target_spacing, order=0)
        pixels = image.array.astype(np.float32)
        if pixels.ndim == ndim:
            pixels = pixels[..., None]
        pixels = self._normalize(pixels)
        pad = pixels.reshape(-1, pixels.shape[-1]).min(axis=0)
        cropped = np.stack(
            [
                center_crop_or_pad(pixels[..., c], self.shape, pad_value=pad[c])
                for c in range(pixels.shape[-1])
            ],
            axis=-1,
        )
        return {
            "image": cropped.astype(np.float32),
            "mask": center_crop_or_pad(label.array, self.shape).astype(np.int32),
            "spacing": np.asarray(image.spacing, np.float32),
        }

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self[int(i)] for i in indices]


def decathlon_sources(
    root: PathLike, *, splits: Sequence[str] = ("train", "validation"), **kwargs
) -> dict[str, DecathlonSource]:
    """``{split: DecathlonSource(root, split=split, **kwargs)}``; the splits share
    the seed, so they are disjoint and together cover the training list."""
    return {split: DecathlonSource(root, split=split, **kwargs) for split in splits}
