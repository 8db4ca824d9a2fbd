"""TFDS builder ``medjax_phantoms``: procedural phantoms written as array_record.

No TensorFlow is needed: HU images are stored as int16 ``Tensor`` features (zlib),
masks as PNG bytes encoded with PIL. Read back with ``tfds.data_source`` or
``phantom_sources`` below, which also builds the data on first use.
"""

import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from medjax.data import phantoms

DEFAULT_SPLIT_SIZES = (("train", 4000), ("validation", 500), ("test", 500))


@dataclasses.dataclass
class PhantomConfig(tfds.core.BuilderConfig):
    """One phantom dataset: the anatomy generator, image size, split sizes, seed."""

    kind: str = "torso2d"
    image_size: int = 64
    split_sizes: tuple[tuple[str, int], ...] = DEFAULT_SPLIT_SIZES
    seed: int = 0


def phantom_config(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
) -> PhantomConfig:
    """The named config for these settings: ``torso2d_64`` for the defaults, a
    name that spells out the split sizes and seed otherwise."""
    if kind not in GENERATORS:
        raise ValueError(f"data.kind: expected one of {sorted(GENERATORS)}, got {kind!r}")
    if image_size < 16:
        raise ValueError(f"data.image_size: expected >= 16, got {image_size}")
    sizes = tuple((split, int(n)) for split, n in (split_sizes or dict(DEFAULT_SPLIT_SIZES)).items())
    for split, n in sizes:
        if n < 1:
            raise ValueError(f"data.split_sizes.{split}: expected >= 1, got {n}")
    name = f"{kind}_{image_size}"
    if sizes != DEFAULT_SPLIT_SIZES or seed != 0:
        name += "_" + "_".join(f"{split}{n}" for split, n in sizes) + f"_seed{seed}"
    return PhantomConfig(
        name=name,
        description=f"{kind} phantoms, {image_size} px, splits {dict(sizes)}, seed {seed}",
        kind=kind, image_size=image_size, split_sizes=sizes, seed=seed,
    )


GENERATORS = {"torso2d": phantoms.torso_slice}


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class MedjaxPhantoms(tfds.core.GeneratorBasedBuilder):
    """Procedural CT-like phantoms with organ and lesion masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "2D torso slices with liver and lung lesions."}
    BUILDER_CONFIGS = [phantom_config(image_size=64), phantom_config(image_size=128)]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=(size, size, 1), dtype=np.int16, encoding="zlib",
                    doc="CT-like slice in Hounsfield units",
                ),
                "organ_mask": tfds.features.Image(
                    shape=(size, size, 1), dtype=np.uint8,
                    doc=f"organ labels {phantoms.ORGAN_LABELS}",
                ),
                "lesion_mask": tfds.features.Image(
                    shape=(size, size, 1), dtype=np.uint8,
                    doc="lesion instance ids, 0 = no lesion",
                ),
                "label": tfds.features.ClassLabel(names=["healthy", "lesion"]),
            }),
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
        config = self.builder_config
        generate = GENERATORS[config.kind]
        for index in range(num_examples):
            case = generate(phantoms.case_rng(config.seed, split, index), config.image_size)
            yield index, {
                "image": case["image"][..., None],
                "organ_mask": _png(case["organ_mask"]),
                "lesion_mask": _png(case["lesion_mask"]),
                "label": int(case["label"]),
            }


def default_data_dir() -> str:
    """``$MEDJAX_DATA`` if set, else ``~/.cache/medjax/tensorflow_datasets``."""
    return os.environ.get("MEDJAX_DATA") or str(
        Path.home() / ".cache" / "medjax" / "tensorflow_datasets"
    )


def phantom_sources(
    kind: str = "torso2d",
    image_size: int = 64,
    split_sizes: dict[str, int] | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Random-access sources of every split, building the dataset on first use.

    Returns:
        ``{split: source}``; ``source[i]`` is a dict of numpy arrays: ``image
        [S, S, 1]`` int16 HU, ``organ_mask``/``lesion_mask [S, S, 1]`` uint8,
        ``label`` int64.
    """
    config = phantom_config(kind, image_size, split_sizes, seed)
    data_dir = os.path.expanduser(data_dir or default_data_dir())
    # A predefined config must be asked for by name (tfds refuses an equal copy).
    named = config.name in MedjaxPhantoms.builder_configs
    builder = MedjaxPhantoms(
        config=config.name if named else config, data_dir=data_dir,
        file_format="array_record",
    )
    if not builder.is_prepared():
        builder.download_and_prepare()
    return {split: builder.as_data_source(split=split) for split, _ in config.split_sizes}
