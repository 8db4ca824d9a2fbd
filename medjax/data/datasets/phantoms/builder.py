"""TFDS builder ``medjax_phantoms``: procedural phantoms written as array_record.

Configs (``medjax_phantoms/<name>``):

- ``torso2d_64``, ``torso2d_128``, ``torso2d_256``: axial CT slices with an MR-like
  twin, organ and lesion masks, lesion centres/radii/types and landmarks;
- ``torso3d_64``: 64^3 volumes with the same fields in 3D;
- ``cine2d_64``: 16-frame short-axis cine MR of a beating left ventricle with its
  ejection fraction and a normal/abnormal-motion label.

Other sizes, split sizes and seeds get a config named after them. No TensorFlow is
needed: arrays are stored as zlib-compressed ``Tensor`` features. Read back with
``tfds.data_source`` or ``phantom_sources`` below, which builds on first use.
"""

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from medjax.data.datasets.phantoms import cine, torso
from medjax.data.sources import LazySources, default_data_dir, prepared

DEFAULT_SPLIT_SIZES = {
    "torso2d": (("train", 4000), ("validation", 500), ("test", 500)),
    "torso3d": (("train", 160), ("validation", 20), ("test", 20)),
    "cine2d": (("train", 1000), ("validation", 200), ("test", 200)),
}
KINDS = tuple(DEFAULT_SPLIT_SIZES)
DEFAULT_NUM_FRAMES = 16


@dataclasses.dataclass
class PhantomConfig(tfds.core.BuilderConfig):
    """One phantom dataset: the generator, image size, split sizes and seed
    (``num_frames`` for cine2d; volumes are image_size^3)."""

    kind: str = "torso2d"
    image_size: int = 64
    split_sizes: tuple[tuple[str, int], ...] = DEFAULT_SPLIT_SIZES["torso2d"]
    seed: int = 0
    num_frames: int = DEFAULT_NUM_FRAMES


def phantom_config(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> PhantomConfig:
    """The config for these settings: ``<kind>_<size>`` for the defaults, a name
    that spells out split sizes, seed and frames otherwise."""
    if kind not in KINDS:
        raise ValueError(f"data.kind: expected one of {list(KINDS)}, got {kind!r}")
    if image_size < 16:
        raise ValueError(f"data.image_size: expected >= 16, got {image_size}")
    if num_frames < 2:
        raise ValueError(f"data.num_frames: expected >= 2, got {num_frames}")
    defaults = DEFAULT_SPLIT_SIZES[kind]
    sizes = tuple((s, int(n)) for s, n in (split_sizes or dict(defaults)).items())
    for split, n in sizes:
        if n < 1:
            raise ValueError(f"data.split_sizes.{split}: expected >= 1, got {n}")
    name = f"{kind}_{image_size}"
    if sizes != defaults or seed != 0:
        name += "_" + "_".join(f"{split}{n}" for split, n in sizes) + f"_seed{seed}"
    if kind == "cine2d" and num_frames != DEFAULT_NUM_FRAMES:
        name += f"_frames{num_frames}"
    return PhantomConfig(
        name=name,
        description=f"{kind} phantoms, {image_size} px, splits {dict(sizes)}, seed {seed}",
        kind=kind,
        image_size=image_size,
        split_sizes=sizes,
        seed=seed,
        num_frames=num_frames,
    )


def _array(shape, dtype, doc):
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding="zlib", doc=doc)


def _torso_features(shape: tuple[int, ...], max_lesions: int):
    ndim = len(shape)
    return {
        "image": _array((*shape, 1), np.int16, "CT in Hounsfield units"),
        "mr_image": _array((*shape, 1), np.int16, "MR-like T1 contrast, same anatomy"),
        "organ_mask": _array(shape, np.uint8, f"organ labels {torso.ORGAN_LABELS}"),
        "lesion_mask": _array(shape, np.uint8, "lesion instance ids, 0 = none"),
        "label": tfds.features.ClassLabel(names=["healthy", "lesion"]),
        "lesion_type": tfds.features.ClassLabel(names=list(torso.LESION_TYPES)),
        "lesion_centers": _array((max_lesions, ndim), np.float32, "voxel coordinates"),
        "lesion_radii": _array((max_lesions,), np.float32, "equivalent radii, voxels"),
        "lesion_types": _array((max_lesions,), np.int64, f"{torso.LESION_TYPES}"),
        "lesion_valid": _array((max_lesions,), np.bool_, "which lesion rows are real"),
        "landmarks": _array(
            (len(torso.LANDMARKS), ndim),
            np.float32,
            f"voxel coordinates of {torso.LANDMARKS}",
        ),
        "landmarks_valid": _array(
            (len(torso.LANDMARKS),), np.bool_, "which landmarks are present"
        ),
    }


def generate_case(
    config: PhantomConfig, split: str, index: int
) -> dict[str, np.ndarray]:
    """Case ``index`` of ``split``, as the builder writes it."""
    rng = torso.case_rng(config.seed, split, index)
    size = config.image_size
    if config.kind == "cine2d":
        case = cine.beating_heart(rng, size, config.num_frames)
        case["image"] = case["image"][..., None]
        return case
    if config.kind == "torso2d":
        case = torso.torso_slice(rng, size)
    else:
        case = torso.torso_volume(rng, size)
    case["image"] = case["image"][..., None]
    case["mr_image"] = case["mr_image"][..., None]
    return case


class MedjaxPhantoms(tfds.core.GeneratorBasedBuilder):
    """Procedural CT/MR-like phantoms: torso slices and volumes, cardiac cine."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "2D torso slices with liver and lung lesions.",
        "2.0.0": "Kidneys, vertebrae and muscles; MR twin; lesion points and types; "
        "landmarks; torso3d and cine2d configs; masks stored as zlib tensors.",
    }
    BUILDER_CONFIGS = [
        phantom_config("torso2d", 64),
        phantom_config("torso2d", 128),
        phantom_config("torso2d", 256),
        phantom_config("torso3d", 64),
        phantom_config("cine2d", 64),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        size = config.image_size
        if config.kind == "cine2d":
            frames = config.num_frames
            features = {
                "image": _array((frames, size, size, 1), np.int16, "cine MR frames"),
                "mask": _array((frames, size, size), np.uint8, f"{cine.CINE_LABELS}"),
                "ejection_fraction": tfds.features.Scalar(np.float32),
                "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
            }
        elif config.kind == "torso2d":
            features = _torso_features((size, size), max_lesions=3)
        else:
            features = _torso_features((size, size, size), max_lesions=5)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("image", "label"),
            # Record i is case i of the split: the files keep generation order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {
            split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes
        }

    def _generate_examples(self, split: str, num_examples: int):
        for index in range(num_examples):
            yield index, generate_case(self.builder_config, split, index)


def lazy_phantom_sources(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> LazySources:
    """``phantom_sources`` built on first access (arguments checked now)."""
    config = phantom_config(kind, image_size, split_sizes, seed, num_frames)
    return LazySources(
        [split for split, _ in config.split_sizes],
        lambda: phantom_sources(
            kind, image_size, split_sizes, seed, data_dir, num_frames
        ),
    )


def phantom_sources(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
) -> dict[str, Any]:
    """Random-access sources of every split, building the dataset on first use.

    Returns:
        ``{split: source}``; ``source[i]`` is a dict of numpy arrays with the
        features of ``MedjaxPhantoms`` for this config.
    """
    config = phantom_config(kind, image_size, split_sizes, seed, num_frames)
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    # A predefined config must be asked for by name (tfds refuses an equal copy).
    named = config.name in MedjaxPhantoms.builder_configs
    builder = prepared(
        lambda: MedjaxPhantoms(
            config=config.name if named else config,
            data_dir=data_dir,
            file_format="array_record",
        ),
        data_dir,
    )
    return {
        split: builder.as_data_source(split=split) for split, _ in config.split_sizes
    }
