"""A dataset as the training loop sees it: random-access sources per split, the
record-to-example conversion, and batch sizes."""

import dataclasses
from typing import Any, Callable

import numpy as np

from medjax.data import pipeline
from medjax.data import schema as schema_lib
from medjax.data.datasets.phantoms import builder as builders
from medjax.errors import ConfigError

SAMPLINGS = ("uniform", "class_balanced")
PHANTOM_FIELD_OF_VIEW_MM = 400.0
PHANTOM_VOLUME_LENGTH_MM = 280.0  # torso_volume spans 0.7 of the [-1, 1] z range


@dataclasses.dataclass
class Dataset:
    """Splits and how to batch them.

    Attributes:
        sources: ``{split: random-access source}`` (``len`` and ``__getitems__``).
        convert: maps one record to one example in the batch convention.
        batch_size: global training batch (over all devices and processes).
        eval_batch_size: global evaluation batch.
        train_split / eval_split: the splits trained on and validated on.
        num_threads: grain reader threads per process.
        spacing: voxel size in mm of the examples (None: unknown), for surface
            distances.
        normalize: maps raw intensities (HU for CT) to model inputs; used by
            ``medjax-predict`` on new images (None: identity).
        sampling: ``uniform`` (each epoch a permutation) or ``class_balanced``
            (each epoch draws examples with replacement, every class equally
            likely; the class is the task's label field).
        schema: ``{key: Role}`` of the examples' fields (``medjax.data.schema``):
            what each field is, for augmentation, figures and task checks.
        name: what the data is, in messages (``medjax_phantoms/torso2d_64``).
    """

    sources: dict[str, Any]
    convert: Callable[[pipeline.Example], pipeline.Example]
    batch_size: int
    eval_batch_size: int
    train_split: str = "train"
    eval_split: str = "validation"
    num_threads: int = 2
    spacing: tuple[float, ...] | None = None
    normalize: Callable[[Any], Any] | None = None
    sampling: str = "uniform"
    schema: dict[str, schema_lib.Role] = dataclasses.field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        schema_lib.as_schema(self.schema)  # checks validity keys
        if self.sampling not in SAMPLINGS:
            raise ValueError(
                f"data.sampling: expected one of {SAMPLINGS}, got {self.sampling!r}"
            )
        for option in ("train_split", "eval_split"):
            split = getattr(self, option)
            if split not in self.sources:
                raise ValueError(
                    f"data.{option}={split!r}: expected one of {sorted(self.sources)}"
                )

    def source(self, split: str):
        if split not in self.sources:
            raise ConfigError(f"split={split!r}: expected one of {sorted(self.sources)}")
        return self.sources[split]

    def labels(self, split: str, key: str) -> np.ndarray:
        """The integer ``key`` field of every example of ``split`` ``[N]`` (a
        source with a ``labels()`` method answers without reading images)."""
        source = self.source(split)
        if hasattr(source, "labels"):
            return np.asarray(source.labels())
        return np.asarray([np.asarray(source[i][key]) for i in range(len(source))])

    def class_counts(self, split: str, key: str, num_classes: int) -> np.ndarray:
        """Examples of each class ``[num_classes]`` in ``split``."""
        labels = self.labels(split, key)
        if labels.ndim > 1:  # multi-label 0/1 targets: positives of each label
            return (labels > 0).sum(0)
        return np.bincount(labels, minlength=num_classes)

    def sample_weights(self, key: str) -> np.ndarray | None:
        """Per-example sampling weights of the training split ``[N]``: None for
        uniform sampling; ``1 / n_class`` for class-balanced sampling."""
        if self.sampling == "uniform":
            return None
        labels = self.labels(self.train_split, key)
        if labels.ndim > 1:
            raise ConfigError(
                "data.sampling=class_balanced: needs one integer class per example, "
                f"got labels of shape {labels.shape[1:]} per example (multi-label)"
            )
        counts = np.bincount(labels)
        return 1.0 / counts[labels]


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
    num_frames: int = builders.DEFAULT_NUM_FRAMES,
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
        sources=builders.lazy_phantom_sources(  # built when a split is first read
            kind, image_size, split_sizes, seed, data_dir, num_frames
        ),
        convert=pipeline.phantom_example(
            window, image_is_ct=kind != "cine2d"  # cine frames are MR
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
    """One example per lesion of the torso phantoms (``medjax.data.datasets.phantoms.lesions``):
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
        exams, sources=builders.LazySources(exams.sources, build), schema=schema,
        name=exams.name + " lesions",
    )


def _float_image(record: pipeline.Example) -> pipeline.Example:
    """Decathlon records are already normalised: fix the dtypes only."""
    example = {}
    for key, value in record.items():
        value = np.asarray(value)
        example[key] = value.astype(np.int32) if key == "mask" else value.astype(np.float32)
    return example


def decathlon(
    root: str,
    shape: tuple[int, ...],
    target_spacing: tuple[float, ...] | None = None,
    normalization: str | None = None,
    window_center: float = 40.0,
    window_width: float = 400.0,
    validation_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 2,
    eval_batch_size: int = 2,
    num_threads: int = 2,
) -> Dataset:
    """A Medical Segmentation Decathlon-style folder (``dataset.json``,
    ``imagesTr/``, ``labelsTr/``) split into ``train`` and ``validation``; cases
    resampled to ``target_spacing``, normalised (``ct`` window or ``zscore``;
    default by modality) and centre-cropped or padded to ``shape``
    (``medjax.data.io.DecathlonSource``). Batches hold ``image`` and ``mask``."""
    from medjax.data import io

    options = dict(
        shape=tuple(shape), validation_fraction=validation_fraction, seed=seed,
        target_spacing=target_spacing, normalization=normalization,
        window=(window_center, window_width),
    )
    try:
        sources = io.decathlon_sources(root, **options)
    except io.ImageFormatError as error:
        raise ConfigError(f"data.root: {error}") from None
    kind = sources["train"].normalization
    if kind == "ct":
        normalize = pipeline.CTWindow(window_center, window_width)
    elif kind == "zscore":
        normalize = io.zscore
    else:
        normalize = None
    return Dataset(
        sources=sources, convert=_float_image, batch_size=batch_size,
        eval_batch_size=eval_batch_size, num_threads=num_threads,
        spacing=None if target_spacing is None else tuple(
            float(s) for s in np.broadcast_to(target_spacing, (len(shape),))
        ),
        normalize=normalize,
        schema={"image": schema_lib.image(), "mask": schema_lib.label_map()},
        name=f"decathlon {root}",
    )
