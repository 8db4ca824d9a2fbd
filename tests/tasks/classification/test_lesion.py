import json
import os

import jax
import numpy as np
import optax
import pytest

from medjax.data.datasets.phantoms import phantom_lesions
from medjax.models.cnn import cnn_tiny
from medjax.models.multistream import multistream_tiny
from medjax.tasks.classification.lesion import LesionClassificationTask
from medjax.engine import loop
from tests.conftest import TINY_SPLITS


@pytest.fixture(scope="module")
def lesions(data_dir):
    return phantom_lesions(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir,
                           batch_size=8, eval_batch_size=8)


def test_views_are_cut_around_the_lesion_centre():
    task = LesionClassificationTask(views=("local", "context"), patch_size=5, context_scale=2)
    image = np.arange(2 * 20 * 20, dtype=np.float32).reshape(2, 20, 20, 1)
    centers = np.array([[[7.0, 9.0]], [[12.2, 3.6]]], np.float32)
    local, context = jax.jit(task.inputs)({"image": image, "lesion_center": centers})
    np.testing.assert_array_equal(local[0, ..., 0], image[0, 5:10, 7:12, 0])
    np.testing.assert_array_equal(local[1, ..., 0], image[1, 10:15, 2:7, 0])
    # the context view: the 10 x 10 region around (7, 9) in 2 x 2 block means
    region = image[0, 2:12, 4:14, 0]
    np.testing.assert_allclose(context[0, ..., 0], region.reshape(5, 2, 5, 2).mean((1, 3)))
    one = LesionClassificationTask(views=("local",), patch_size=5)
    assert one.inputs({"image": image, "lesion_center": centers}).shape == (2, 5, 5, 1)


@pytest.mark.parametrize("kwargs", [{"views": ()}, {"views": ("middle",)}, {"patch_size": 0}])
def test_bad_view_settings(kwargs):
    with pytest.raises(ValueError, match="task."):
        LesionClassificationTask(**kwargs)


@pytest.mark.parametrize("model, views", [
    (multistream_tiny(num_classes=3, num_streams=2), ("local", "context")),
    (cnn_tiny(num_classes=3), ("local",)),
])
def test_lesion_classifiers_train_and_report(model, views, lesions, tmp_path):
    from medjax.augment import Augmentation

    task = LesionClassificationTask(num_classes=3, views=views, patch_size=9,
                                    class_names=("hypo", "hyper", "nodule"))
    summary = loop.train(
        task=task, model=model, tx=optax.adam(1e-2), data=lesions, run_dir=str(tmp_path),
        max_steps=4, eval_every=4, checkpoint_every=4, log_every=2, progress=False,
        augment=Augmentation(rotation_probability=1.0, rotation_degrees=20.0),
        best_metric="auroc",
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == len(lesions.source("validation"))
    assert {"auroc", "balanced_accuracy", "recall_nodule"} <= set(validation)
    assert os.path.isfile(tmp_path / "figures" / "validation_step_000004_confusion.png")
    with open(tmp_path / "metrics.jsonl") as f:
        train = [json.loads(line) for line in f if '"train"' in line]
    assert all(np.isfinite(r["loss"]) for r in train)
