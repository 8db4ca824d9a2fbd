"""medjax-show: what is drawn is decided by the data's roles; pictures of samples
with overlays, before and after augmentation."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from medjax.augment import Augmentation
from medjax.data import pipeline
from medjax.data.datasets import phantoms as dataset
from medjax.data import schema as roles
from medjax.data.datasets.phantoms.builder import phantom_sources
from medjax.runtime import random_key
from medjax.viz import samples
from medjax.viz.samples import Layout, augment_for_display, layout, sample_grid

DECATHLON = {"image": roles.image(), "mask": roles.label_map()}


def picture(path):
    image = np.asarray(Image.open(path).convert("L"), float)
    assert image.std() > 10  # not blank
    return image


def test_a_decathlon_schema_is_an_image_with_its_label_map_not_a_sequence():
    # Its label map is called "mask", as the cine phantom's is: only roles count.
    assert layout(DECATHLON) == Layout(image="image", label_maps=("mask",))


def test_cine_is_drawn_as_frames_with_their_label_maps():
    plan = layout(dataset.cine_schema())
    assert plan.sequence and plan.image == "image" and plan.label_maps == ("mask",)
    assert set(plan.captions) == {"ejection_fraction", "label"}
    frames = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7, 1)
    labels = (frames[..., 0] % 3).astype(np.int32)
    grey, maps, _ = samples._panel(plan, {"image": frames, "mask": labels})
    # Four frames spread over five, tiled 2 x 2 (row by row) so the panel stays square.
    f = frames[..., 0]
    np.testing.assert_array_equal(grey, np.block([[f[0], f[1]], [f[3], f[4]]]))
    np.testing.assert_array_equal(
        maps["mask"], np.block([[labels[0], labels[1]], [labels[3], labels[4]]])
    )


def test_a_single_image_panel_is_the_image_and_a_volume_its_middle_slice():
    image = np.random.default_rng(0).uniform(size=(6, 7, 1)).astype(np.float32)
    grey, maps, middle = samples._panel(
        layout(DECATHLON), {"image": image, "mask": np.ones((6, 7), np.int32)}
    )
    np.testing.assert_array_equal(grey, image[..., 0])
    assert maps["mask"].shape == (6, 7) and middle is None
    volume = np.arange(4 * 5 * 7, dtype=np.float32).reshape(4, 5, 7, 1)
    grey, _, middle = samples._panel(
        layout(DECATHLON), {"image": volume, "mask": np.zeros((4, 5, 7), np.int32)}
    )
    assert middle == 3
    np.testing.assert_array_equal(grey, volume[..., 3, 0])


def test_the_layout_draws_only_the_fields_a_batch_holds():
    plan = layout(
        dataset.torso_schema(),
        keys=(
            "image",
            "organ_mask",
            "lesion_mask",
            "landmarks",
            "landmarks_valid",
            "label",
        ),
    )
    assert plan == Layout(
        image="image",
        label_maps=("organ_mask",),
        instance_maps=("lesion_mask",),
        points=(("landmarks", "landmarks_valid"),),
        captions=("label",),
    )
    with pytest.raises(ValueError, match="no image field to draw.*features 'features'"):
        layout({"features": roles.TABULAR, "label": roles.CLASS})


def test_a_decathlon_like_batch_and_a_sequence_are_drawn(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros((2, 12, 10), np.int32)
    mask[:, 3:8, 2:6] = 1
    image = (mask[..., None] + rng.normal(0, 0.1, (2, 12, 10, 1))).astype(np.float32)
    boxes = np.asarray([[[3, 2, 7, 5]]] * 2, np.float32)
    schema = {**DECATHLON, "box": roles.boxes("box_valid"), "box_valid": roles.VALID}
    batch = {
        "image": image,
        "mask": mask,
        "box": boxes,
        "box_valid": np.ones((2, 1), bool),
    }
    sample_grid(batch, None, str(tmp_path / "image.png"), "decathlon", schema=schema)
    picture(tmp_path / "image.png")
    cine = {"image": np.stack([image] * 3, 1), "mask": np.stack([mask] * 3, 1)}
    cine_schema = {"image": roles.image(time=True), "mask": roles.label_map(time=True)}
    sample_grid(cine, None, str(tmp_path / "cine.png"), "cine", schema=cine_schema)
    picture(tmp_path / "cine.png")
    # Three frames tile 2 x 2, the fourth tile empty.
    grey, _, _ = samples._panel(layout(cine_schema), jax.tree.map(lambda a: a[0], cine))
    height, width = image.shape[1:3]
    assert grey.shape == (2 * height, 2 * width)
    assert not grey[height:, width:].any()
    np.testing.assert_array_equal(grey[height:, :width], image[0, ..., 0])


@pytest.mark.slow
def test_cli_writes_a_grid(data_dir, tmp_path):
    output = tmp_path / "grid.png"
    result = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "medjax-show"),
            "data=phantoms_tiny",
            "num_examples=3",
            f"output={output}",
        ],
        env={**os.environ, "MEDJAX_DATA": data_dir},
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    image = picture(output)
    assert image.shape[1] > image.shape[0]  # three columns, two rows
    assert not (tmp_path / "outputs").exists()  # nothing else written


@pytest.mark.parametrize("kind", ["torso3d", "cine2d"])
def test_grid_of_volumes_and_cine(kind, tmp_path):
    source = phantom_sources(
        kind,
        image_size=16,
        split_sizes={"train": 3},
        data_dir=str(tmp_path),
        num_frames=4,
    )["train"]
    convert = pipeline.phantom_example(
        pipeline.CTWindow(), image_is_ct=kind != "cine2d"
    )
    batch = pipeline.read_examples(source, [0, 1, 2], convert, tuple(source[0]))
    schema = dataset.cine_schema() if kind == "cine2d" else dataset.torso_schema()
    augment = Augmentation(rotation_probability=1.0, rotation_degrees=30)
    augmented = augment_for_display(augment, random_key(0), batch, schema)
    masks = ("mask",) if kind == "cine2d" else ("organ_mask", "lesion_mask")
    for key in masks:  # masks moved, labels kept
        assert set(np.unique(augmented[key])) <= set(np.unique(batch[key]))
        assert not np.array_equal(augmented[key], batch[key])
    sample_grid(batch, augmented, str(tmp_path / "grid.png"), title=kind, schema=schema)
    picture(tmp_path / "grid.png")
