"""medjax-show: pictures of samples with overlays, before and after augmentation."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from medjax.augment import Augmentation
from medjax.data import pipeline
from medjax.data.datasets.phantoms.builder import phantom_sources
from medjax.viz.samples import augment_for_display, sample_grid


def picture(path):
    image = np.asarray(Image.open(path).convert("L"), float)
    assert image.std() > 10  # not blank
    return image


def test_cli_writes_a_grid(data_dir, tmp_path):
    output = tmp_path / "grid.png"
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "medjax-show"), "data=phantoms_tiny",
         "num_examples=3", f"output={output}"],
        env={**os.environ, "MEDJAX_DATA": data_dir}, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    image = picture(output)
    assert image.shape[1] > image.shape[0]  # three columns, two rows
    assert not (tmp_path / "outputs").exists()  # nothing else written


@pytest.mark.parametrize("kind", ["torso3d", "cine2d"])
def test_grid_of_volumes_and_cine(kind, tmp_path):
    source = phantom_sources(kind, image_size=16, split_sizes={"train": 3},
                             data_dir=str(tmp_path), num_frames=4)["train"]
    convert = pipeline.phantom_example(pipeline.CTWindow(), image_is_ct=kind != "cine2d")
    batch = pipeline.read_examples(source, [0, 1, 2], convert, tuple(source[0]))
    augment = Augmentation(rotation_probability=1.0, rotation_degrees=30)
    augmented = augment_for_display(augment, jax.random.key(0), batch)
    masks = ("mask",) if kind == "cine2d" else ("organ_mask", "lesion_mask")
    for key in masks:  # masks moved, labels kept
        assert set(np.unique(augmented[key])) <= set(np.unique(batch[key]))
        assert not np.array_equal(augmented[key], batch[key])
    sample_grid(batch, augmented, str(tmp_path / "grid.png"), title=kind)
    picture(tmp_path / "grid.png")
