"""Tiny Medical Segmentation Decathlon folders (``dataset.json``, ``imagesTr/``,
``labelsTr/``) of random NIfTI cases, for the Decathlon, config and training tests."""

import json

import nibabel as nib
import numpy as np


def make_decathlon(root, *, count=4, shape=(20, 18, 9), channels=None, modality=None):
    """Writes ``count`` int16 images and uint8 labels (0..2) at 2 mm; returns
    ``(images, labels)``, the arrays written, in case order."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-20.0, -18.0, 4.0)
    training, images, labels = [], [], []
    for n in range(count):
        image_shape = shape + ((channels,) if channels else ())
        image = rng.integers(-1000, 1000, size=image_shape).astype(np.int16)
        label = rng.integers(0, 3, size=shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{n}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{n}.nii.gz")
        training.append(
            {
                "image": f"./imagesTr/case_{n}.nii.gz",
                "label": f"./labelsTr/case_{n}.nii.gz",
            }
        )
        images.append(image)
        labels.append(label)
    description = {
        "name": "Tiny",
        "modality": modality or {"0": "CT"},
        "labels": {"0": "background", "1": "organ", "2": "tumour"},
        "numTraining": count,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(description))
    return images, labels
