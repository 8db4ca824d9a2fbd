"""The built-in procedural phantoms as medjax datasets: torso CT/MR slices and
volumes, cine MR of a beating heart (``phantoms``), and one example per lesion
(``phantom_lesions``). The generators are in ``torso.py`` and ``cine.py``, the
TFDS builder in ``builder.py``; ``healthy.py`` keeps the healthy-only variant."""

import dataclasses
from typing import Any

from medjax.data import pipeline
from medjax.data import schema as schema_lib
from medjax.data.dataset import Dataset
from medjax.data.datasets.phantoms import builder as phantom_builder
from medjax.data.sources import LazySources

PHANTOM_FIELD_OF_VIEW_MM = 400.0
PHANTOM_VOLUME_LENGTH_MM = 280.0  # torso_volume spans 0.7 of the [-1, 1] z range


def torso_schema() -> dict[str, schema_lib.Role]:
    """The fields of torso phantom slices and volumes (see ``torso.py``)."""
    return {
        "image": schema_lib.image(),
        "mr_image": schema_lib.image(),
        "organ_mask": schema_lib.label_map(),
        "lesion_mask": schema_lib.instance_map(),
        "label": schema_lib.CLASS,
        "lesion_type": schema_lib.CLASS,
        "lesion_centers": schema_lib.points(valid="lesion_valid"),
        "lesion_radii": schema_lib.REGRESSION_TARGET,
        "lesion_types": schema_lib.CLASS,
        "lesion_valid": schema_lib.VALID,
        "landmarks": schema_lib.points(valid="landmarks_valid"),
        "landmarks_valid": schema_lib.VALID,
    }


def cine_schema() -> dict[str, schema_lib.Role]:
    """The fields of cine phantoms: frames and masks share a time axis."""
    return {
        "image": schema_lib.image(time=True),
        "mask": schema_lib.label_map(time=True),
        "ejection_fraction": schema_lib.REGRESSION_TARGET,
        "label": schema_lib.CLASS,
    }


def phantoms(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    batch_size: int = 64,
    eval_batch_size: int = 128,
    window_center: float = 40.0,
    window_width: float = 400.0,
    num_frames: int = phantom_builder.DEFAULT_NUM_FRAMES,
    num_threads: int = 2,
    sampling: str = "uniform",
) -> Dataset:
    """The built-in ``medjax_phantoms`` data (built on first use into ``data_dir``):
    CT windowed from HU to [-1, 1], MR intensities scaled by 1/1000.

    The phantoms have a nominal 400 mm in-plane field of view and volumes span
    280 mm caudo-cranially, which sets ``spacing`` (6.25 mm at 64 pixels)."""
    if window_width <= 0:
        raise ValueError(f"data.window_width: expected > 0, got {window_width}")
    window = pipeline.CTWindow(window_center, window_width)
    spacing = (PHANTOM_FIELD_OF_VIEW_MM / image_size,) * 2
    if kind == "torso3d":
        spacing += (PHANTOM_VOLUME_LENGTH_MM / image_size,)
    elif kind == "cine2d":
        spacing = None
    return Dataset(
        # Built when a split is first read.
        sources=phantom_builder.lazy_phantom_sources(
            kind, image_size, split_sizes, seed, data_dir, num_frames
        ),
        convert=pipeline.phantom_example(
            window,
            image_is_ct=kind != "cine2d",  # cine frames are MR
        ),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_threads=num_threads,
        spacing=spacing,
        normalize=window if kind != "cine2d" else None,
        sampling=sampling,
        schema=cine_schema() if kind == "cine2d" else torso_schema(),
        name=f"medjax_phantoms/{kind}_{image_size}",
    )


def phantom_lesions(
    kind: str = "torso2d", image_size: int = 128, **options: Any
) -> Dataset:
    """One example per lesion of the torso phantoms (``lesions.LesionSource``):
    the exam's image with ``lesion_center``, ``lesion_label`` (liver hypodense,
    liver hyperdense, lung nodule) and ``lesion_radius``. Other options as
    :func:`phantoms`."""
    if kind not in ("torso2d", "torso3d"):
        raise ValueError(f"data.kind: expected 'torso2d' or 'torso3d', got {kind!r}")
    exams = phantoms(kind, image_size, **options)

    def build():
        from medjax.data.datasets.phantoms.lesions import LesionSource

        return {
            split: LesionSource(exams.sources[split], f"{kind} {split} lesions")
            for split in exams.sources
        }

    schema = {
        **exams.schema,
        "lesion_center": schema_lib.points(valid="lesion_center_valid"),
        "lesion_center_valid": schema_lib.VALID,
        "lesion_label": schema_lib.CLASS,
        "lesion_radius": schema_lib.REGRESSION_TARGET,
    }
    return dataclasses.replace(
        exams,
        sources=LazySources(exams.sources, build),
        schema=schema,
        name=exams.name + " lesions",
    )
