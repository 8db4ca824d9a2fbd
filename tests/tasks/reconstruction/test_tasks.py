"""The reconstruction and anomaly tasks: what they prepare, need and compute
(the losses, metrics and figures they use have their own tests)."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medjax.data import schema as roles
from medjax.data.datasets.phantoms import torso_schema
from medjax.inferers.latents import export_latents
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.reconstruction import TARGET_KEY, AnomalyTask, ReconstructionTask


def test_vae_loss_adds_the_weighted_kl_per_element():
    task = ReconstructionTask(kl_weight=0.5)
    batch = {"image": jnp.zeros((2, 2, 2, 1)), "valid": jnp.array([True, False])}
    batch = task.prepare_batch(random_key(0), batch, train=False)
    outputs = {
        "reconstruction": jnp.ones((2, 2, 2, 1)),
        "mean": jnp.array([[1.0], [1.0]]), "log_variance": jnp.zeros((2, 1)),
    }
    loss, per_example = task.loss(outputs, batch)
    # mse 1, KL 1/2 over 4 elements, weight 1/2; the padded example is left out.
    assert float(loss) == pytest.approx(1.0 + 0.5 * 0.5 / 4)
    np.testing.assert_allclose(per_example["kl"], [0.5, 0.0])
    assert float(per_example["psnr"][0]) == pytest.approx(10 * np.log10(4.0))
    plain, _ = task.loss({"reconstruction": outputs["reconstruction"]}, batch)
    assert float(plain) == 1.0


def test_a_classifier_output_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"model=\*autoencoder\*"):
        ReconstructionTask().loss(jnp.zeros((2, 2)), {"image": jnp.zeros((2, 4, 4, 1)), "valid": jnp.ones(2, bool)})


def test_denoising_corrupts_training_inputs_and_keeps_the_clean_target():
    image = jnp.zeros((4, 32, 32, 1))
    batch = {"image": image, "valid": jnp.ones(4, bool)}
    task = ReconstructionTask(denoising_std=0.3)
    noisy = task.prepare_batch(random_key(0), batch, train=True)
    assert float(jnp.std(noisy["image"])) == pytest.approx(0.3, rel=0.05)
    np.testing.assert_array_equal(noisy[TARGET_KEY], image)
    # Evaluation and a plain autoencoder: the input as it is, and the target.
    for prepared in (
        task.prepare_batch(random_key(0), batch, train=False),
        ReconstructionTask().prepare_batch(random_key(0), batch, train=True),
    ):
        np.testing.assert_array_equal(prepared["image"], image)
        np.testing.assert_array_equal(prepared[TARGET_KEY], image)
    # The loss compares with the clean target: reconstructing the clean image is free.
    loss, _ = ReconstructionTask().loss({"reconstruction": image}, noisy)
    assert float(loss) == 0.0


def test_the_target_moves_with_the_input_and_the_needs_are_checked():
    task = AnomalyTask(region_key="organ_mask", region_labels=(2, 3))
    assert task.batch_keys == ("image", "label", "lesion_mask", "organ_mask")
    configured = task.configure(type("Data", (), {"schema": torso_schema()})())
    batch_roles = dict(configured.batch_roles())
    # Augmentation moves the clean target as an image, after the input; the lesion
    # instances and the scoring region as label maps.
    assert [k for k, r in configured.batch_roles() if r.kind == roles.IMAGE] == [
        "image", TARGET_KEY,
    ]
    assert batch_roles["lesion_mask"].kind == roles.INSTANCE_MAP
    assert batch_roles["organ_mask"].kind == roles.LABEL_MAP
    cine = {"image": roles.image(time=True), "mask": roles.label_map(time=True)}
    with pytest.raises(TaskDataMismatch, match="'label'"):
        task.configure(type("Data", (), {"schema": cine, "name": "cine"})())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_auprc_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.5 * labels, 1)  # rounded: ties
    maps = rng.random((40, 3, 3)).astype(np.float32)
    result = AnomalyTask().split_metrics({
        "score": scores, "label": labels.astype(np.int32) * 2, "anomaly_map": maps,
        "lesion_mask": (maps > 0.8).astype(np.uint8), "inside": np.ones((40, 3, 3), np.uint8),
    })
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert result["score_lesion"] == pytest.approx(scores[labels].mean())


def test_anomaly_host_outputs_score_the_body():
    task = AnomalyTask(map_sigma=0.0, score_quantile=None, body_threshold=-0.5)
    image = -jnp.ones((2, 4, 4, 1)).at[:, 1:3, 1:3].set(0.0)  # a 2 x 2 body
    reconstruction = image.at[0, 1, 1, 0].add(1.0).at[1, 0, 0, 0].add(1.0)  # outside, for 1
    batch = {"image": image, "label": jnp.array([1, 0]), "lesion_mask": jnp.zeros((2, 4, 4), jnp.int32)}
    out = task.host_outputs({"reconstruction": reconstruction}, batch)
    np.testing.assert_allclose(out["score"], [0.25, 0.0])
    assert out["anomaly_map"].shape == (2, 4, 4) and out["lesion_mask"].dtype == jnp.uint8


def test_anomaly_scores_inside_a_region_of_the_label_map():
    # Body: the middle 2 x 2. Region (label 3): its left column, in image 0 only.
    task = AnomalyTask(map_sigma=0.0, score_quantile=None, body_threshold=-0.5,
                       region_key="organ_mask", region_labels=(3,))
    assert task.batch_keys[-1] == "organ_mask"
    image = -jnp.ones((2, 4, 4, 1)).at[:, 1:3, 1:3].set(0.0)
    reconstruction = image.at[:, 1, 1, 0].add(1.0).at[:, 1, 2, 0].add(3.0)
    organs = jnp.zeros((2, 4, 4), jnp.int32).at[0, 1:3, 1].set(3)
    batch = {"image": image, "label": jnp.array([1, 0]),
             "lesion_mask": jnp.zeros((2, 4, 4), jnp.int32), "organ_mask": organs}
    out = task.host_outputs({"reconstruction": reconstruction}, batch)
    # image 0: mean over its 2 region voxels (errors 1 and 0); image 1 has no
    # region voxel: mean over the 4 body voxels (errors 1, 9, 0, 0)
    np.testing.assert_allclose(out["score"], [0.5, 2.5])
    with pytest.raises(ValueError, match="region_labels"):
        AnomalyTask(region_key="organ_mask")


def test_healthy_phantoms_train_on_healthy_cases_only(data_dir):
    from medjax.data.datasets.phantoms.healthy import healthy_phantoms

    data = healthy_phantoms(
        image_size=32, split_sizes={"train": 10, "validation": 20, "test": 12}, data_dir=data_dir,
        batch_size=4, eval_batch_size=4,
    )
    train = data.source("train")
    assert len(train) == 10
    assert all(int(r["label"]) == 0 and not r["lesion_mask"].any() for r in train.__getitems__(range(10)))
    validation = [int(r["label"]) for r in data.source("validation").__getitems__(range(20))]
    assert 0 in validation and 1 in validation and len(validation) == 20


def test_anomaly_detection_trains_end_to_end_and_exports_latents(data_dir, tmp_path):
    """A tiny autoencoder on healthy 32 x 32 phantoms, evaluated on both kinds, then
    its codes of the validation split exported."""
    from medjax.data.datasets.phantoms.healthy import healthy_phantoms
    from medjax.models.autoencoder import vae_tiny
    from medjax.engine import evaluate, loop, sharding
    from medjax.engine.optim import make_optimizer

    data = healthy_phantoms(
        image_size=32, split_sizes={"train": 16, "validation": 20, "test": 12},
        data_dir=data_dir, batch_size=8, eval_batch_size=12,
    )
    task = AnomalyTask(denoising_std=0.1, kl_weight=0.01)
    model = vae_tiny()
    tx = make_optimizer("adam", lr=3e-3, total_steps=6)
    run_dir = str(tmp_path / "run")
    summary = loop.train(
        task=task, model=model, tx=tx, data=data, run_dir=run_dir, max_steps=6,
        eval_every=6, checkpoint_every=6, best_metric="auroc", log_every=3, progress=False,
    )
    validation = summary["final"]["validation"]
    assert validation["num_examples"] == 20
    assert 0.0 <= validation["auroc"] <= 1.0 and 0.0 < validation["auprc"] <= 1.0
    assert validation["kl"] > 0 and np.isfinite(validation["psnr"])
    assert os.path.isfile(os.path.join(run_dir, "figures", "validation_step_000006.png"))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0]

    mesh = sharding.data_mesh()
    state, _ = evaluate.restore_checkpoint(
        loop.init_state(model, tx, data, task, mesh, 0), run_dir, "latest"
    )
    out = export_latents(model, state.variables(), data, "validation", str(tmp_path / "latents"))
    saved = np.load(tmp_path / "latents" / "latents.npz")
    assert saved["latents"].shape == (20, model.latent) and saved["labels"].shape == (20,)
    assert saved["projection"].shape == (20, 2)
    np.testing.assert_array_equal(saved["labels"], out["labels"])
    assert os.path.isfile(tmp_path / "latents" / "latents_pca.png")




def test_coarse_noise_corrupts_inputs_with_the_ops_noise():
    image = jnp.zeros((2, 32, 32, 1))
    batch = {"image": image, "valid": jnp.ones(2, bool)}
    task = ReconstructionTask(denoising_std=0.5, noise_resolution=8)
    noisy = task.prepare_batch(random_key(4), batch, train=True)
    from medjax.ops.noise import coarse_noise

    np.testing.assert_allclose(noisy["image"], 0.5 * coarse_noise(random_key(4), image.shape, 8),
                               rtol=1e-6)
    np.testing.assert_array_equal(noisy[TARGET_KEY], image)
    with pytest.raises(ValueError, match="noise_resolution"):
        ReconstructionTask(noise_resolution=0)


def test_region_scoring_counts_only_lesions_inside_and_reports_pixel_metrics():
    task = AnomalyTask(region_key="organ_mask", region_labels=(3,))
    inside = np.zeros((3, 4, 4), np.uint8)
    inside[:, :2] = 1  # the region: the top half
    lesion = np.zeros((3, 4, 4), np.uint8)
    lesion[0, 0, 0] = 1  # inside the region
    lesion[1, 3, 3] = 1  # outside it (a lung nodule, say): healthy in the region
    maps = np.where(lesion > 0, 1.0, 0.1).astype(np.float32)
    maps[1, 3, 3] = 0.1
    out = {"score": np.array([1.0, 0.5, 0.2]), "label": np.array([1, 1, 0]),
           "anomaly_map": maps, "lesion_mask": lesion, "inside": inside}
    np.testing.assert_array_equal(task.image_truth(out), [True, False, False])
    result = task.split_metrics(out)
    assert result["auroc"] == 1.0 and result["score_lesion"] == 1.0
    # Inside the region the only lesion voxel scores highest: a perfect map.
    assert result["pixel_auprc"] == 1.0 and result["best_dice"] == 1.0
    assert AnomalyTask().image_truth(out).tolist() == [True, True, False]


def test_restoration_replaces_the_reconstruction_in_the_map():
    task = AnomalyTask(restoration_steps=1, restoration_step_size=0.25, restoration_weight=0.0,
                       body_threshold=-0.5, map_sigma=0.0, score_quantile=None)
    image = jnp.full((1, 4, 4, 1), -1.0).at[:, 1:3, 1:3].set(0.4)

    def zero_decoder(x):
        return {"reconstruction": jnp.zeros_like(x)}

    outputs = task.predict(zero_decoder, image)
    # One step on sum (x - 0)^2 inside the body: x <- x - 0.25 * 2x = x / 2.
    expected = image.at[:, 1:3, 1:3].set(0.2)
    np.testing.assert_allclose(outputs["restored"], expected, rtol=1e-6)
    batch = {"image": image, "label": jnp.array([1]), "lesion_mask": jnp.zeros((1, 4, 4), jnp.int32)}
    host = task.host_outputs(outputs, batch)
    np.testing.assert_allclose(host["score"], [0.2**2], rtol=1e-5)
    assert "restored" not in AnomalyTask().predict(zero_decoder, image)
