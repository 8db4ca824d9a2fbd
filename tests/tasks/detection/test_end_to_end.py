"""Each learned detector trains end to end on 4 forced CPU devices (tiny
phantoms, two steps), logs its FROC metrics and writes both figures; a
detection task on data without lesions fails in one line when the run is
built."""

import os

import jax
import pytest

from medjax.config import compose
from medjax.config.run import build_run
from medjax.tasks.base import TaskDataMismatch


def _train(task, model, data, run_dir):
    from medjax.engine.loop import train
    from medjax.engine.optim import make_optimizer

    return train(
        task=task,
        model=model,
        tx=make_optimizer("adam", lr=1e-3, total_steps=2),
        data=data,
        run_dir=run_dir,
        max_steps=2,
        eval_every=2,
        checkpoint_every=2,
        best_metric=task.primary_metric,
        log_every=1,
        progress=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pixel", "centernet"])
def test_detector_trains_on_four_devices(name, tiny_data, tmp_path):
    from medjax.models.detection.centernet import centernet_tiny
    from medjax.models.unet import unet_tiny
    from medjax.tasks.detection import CenterNetTask, PixelDetectionTask

    assert jax.device_count() == 4
    if name == "pixel":
        task, model = PixelDetectionTask(max_detections=8), unet_tiny(num_classes=2)
    else:
        task = CenterNetTask(max_detections=8)
        model = centernet_tiny(num_classes=1, base_width=2, trunk_width=4, head_width=4)
    run_dir = str(tmp_path / "run")
    summary = _train(task, model, tiny_data, run_dir)
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 20
    assert 0.0 <= validation["cpm"] <= 1.0 and 0.0 <= validation["ap50"] <= 1.0
    assert validation["num_lesions"] > 0
    for figure in ("validation_step_000002.png", "validation_step_000002_froc.png"):
        assert os.path.isfile(os.path.join(run_dir, "figures", figure))


def test_a_detection_task_on_data_without_lesions_fails_in_one_line():
    cfg = compose(
        "train", ["task=centernet", "model=centernet_tiny", "data=breast_cancer"]
    )
    with pytest.raises(TaskDataMismatch) as error:
        build_run(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("task=CenterNetTask needs lesions: an instance_map field")
    assert "data=breast_cancer" in message
