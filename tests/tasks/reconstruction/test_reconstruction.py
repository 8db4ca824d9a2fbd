import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from medjax.tasks.reconstruction import task as tasks
from medjax.tasks.reconstruction.task import AnomalyTask, ReconstructionTask


def test_reconstruction_error_is_a_masked_per_example_mean():
    target = jnp.zeros((3, 2, 2, 1))
    reconstruction = jnp.stack([jnp.full((2, 2, 1), v) for v in (1.0, 2.0, 5.0)])
    error = tasks.reconstruction_error(reconstruction, target, mask=jnp.array([True, True, False]))
    np.testing.assert_allclose(error, [1.0, 4.0, 0.0])


def test_kl_divergence_hand_computed():
    # KL(N(1, 1) || N(0, 1)) = 1/2; KL(N(0, 2) || N(0, 1)) = (2 - 1 - log 2) / 2.
    mean = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    log_variance = jnp.array([[0.0, np.log(2.0)], [0.0, 0.0]])
    kl = tasks.kl_divergence(mean, log_variance)
    np.testing.assert_allclose(kl, [0.5 + (1 - np.log(2.0)) / 2, 0.0], rtol=1e-6)
    assert float(tasks.kl_divergence(mean, log_variance, mask=jnp.array([False, True]))[0]) == 0


def test_vae_loss_adds_the_weighted_kl_per_element():
    task = ReconstructionTask(kl_weight=0.5)
    batch = {"image": jnp.zeros((2, 2, 2, 1)), "valid": jnp.array([True, False])}
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
    with pytest.raises(ValueError, match="model=autoencoder"):
        ReconstructionTask().loss(jnp.zeros((2, 2)), {"image": jnp.zeros((2, 4, 4, 1)), "valid": jnp.ones(2, bool)})


def test_denoising_corrupts_inputs_and_keeps_the_clean_target():
    image = jnp.zeros((4, 32, 32, 1))
    batch = {"image": image, "valid": jnp.ones(4, bool)}
    noisy = ReconstructionTask(denoising_std=0.3).training_batch(jax.random.key(0), batch)
    assert float(jnp.std(noisy["image"])) == pytest.approx(0.3, rel=0.05)
    np.testing.assert_array_equal(noisy[tasks.TARGET_KEY], image)
    plain = ReconstructionTask().training_batch(jax.random.key(0), batch)
    np.testing.assert_array_equal(plain["image"], image)
    # The loss compares with the clean target: reconstructing the clean image is free.
    loss, _ = ReconstructionTask().loss({"reconstruction": image}, noisy)
    assert float(loss) == 0.0


def test_gaussian_smooth_matches_scipy():
    maps = np.random.default_rng(0).random((2, 11, 13)).astype(np.float32)
    ours = tasks.gaussian_smooth(jnp.asarray(maps), 1.0)
    for i in range(2):
        np.testing.assert_allclose(
            ours[i], scipy.ndimage.gaussian_filter(maps[i], 1.0, mode="constant", truncate=3.0),
            atol=1e-6,
        )
    volume = np.zeros((1, 9, 9, 9), np.float32)
    volume[0, 4, 4, 4] = 1.0
    smoothed = tasks.gaussian_smooth(jnp.asarray(volume), 1.0)
    np.testing.assert_allclose(
        smoothed[0], scipy.ndimage.gaussian_filter(volume[0], 1.0, mode="constant", truncate=3.0),
        atol=1e-6,
    )


def test_anomaly_scores_against_numpy():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 6, 7)).astype(np.float32)
    body = rng.random((3, 6, 7)) > 0.4
    body[2] = False  # no body: every voxel counts
    mean = tasks.anomaly_scores(jnp.asarray(maps), jnp.asarray(body))
    q90 = tasks.anomaly_scores(jnp.asarray(maps), jnp.asarray(body), quantile=0.9)
    for i in range(2):
        assert float(mean[i]) == pytest.approx(maps[i][body[i]].mean(), rel=1e-5)
        assert float(q90[i]) == pytest.approx(np.quantile(maps[i][body[i]], 0.9), rel=1e-5)
    assert float(mean[2]) == pytest.approx(maps[2].mean(), rel=1e-5)
    assert float(tasks.anomaly_scores(jnp.asarray(maps))[0]) == pytest.approx(maps[0].mean(), rel=1e-5)


def test_anomaly_map_is_the_squared_error():
    image = jnp.zeros((1, 5, 5, 1))
    reconstruction = image.at[0, 2, 3, 0].set(2.0)
    maps = tasks.anomaly_maps(image, reconstruction)
    assert maps.shape == (1, 5, 5) and float(maps[0, 2, 3]) == 4.0 and float(maps.sum()) == 4.0
    smooth = tasks.anomaly_maps(image, reconstruction, sigma=1.0)
    assert int(jnp.argmax(smooth[0])) == 2 * 5 + 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_auprc_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40) + 0.5 * labels, 1)  # rounded: ties
    result = AnomalyTask().split_metrics({"score": scores, "label": labels.astype(np.int32) * 2})
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert result["score_lesion"] == pytest.approx(scores[labels].mean())
    assert np.isnan(tasks.average_precision(scores, np.zeros(40)))


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


def test_pca_projection_matches_scikit_learn():
    from sklearn.decomposition import PCA

    latents = np.random.default_rng(0).normal(size=(50, 6)) * [5, 3, 1, 1, 1, 1]
    projection, ratio = tasks.pca_projection(latents)
    reference = PCA(2).fit(latents)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(projection), np.abs(reference.transform(latents)), atol=1e-8)
    few, _ = tasks.pca_projection(latents[:, :1])
    assert few.shape == (50, 2) and not few[:, 1].any()


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
    out = tasks.export_latents(model, state.variables(), data, "validation", str(tmp_path / "latents"))
    saved = np.load(tmp_path / "latents" / "latents.npz")
    assert saved["latents"].shape == (20, model.latent) and saved["labels"].shape == (20,)
    assert saved["projection"].shape == (20, 2)
    np.testing.assert_array_equal(saved["labels"], out["labels"])
    assert os.path.isfile(tmp_path / "latents" / "latents_pca.png")


def test_greedy_layerwise_pretraining_then_fine_tuning():
    from medjax.models.autoencoder import StackedAutoencoder

    rng = np.random.default_rng(0)
    # Images on a 3-dimensional subspace: a stack with a 3-wide code can fit them.
    images = (rng.normal(size=(64, 3)) @ rng.normal(size=(3, 64)) / 4).reshape(64, 8, 8, 1)
    model = StackedAutoencoder(hidden=(24, 12, 3))
    initial = model.init(jax.random.key(0), jnp.asarray(images[:1]), train=False)
    before = float(jnp.mean(jnp.square(
        model.apply(initial, jnp.asarray(images), train=False)["reconstruction"] - images
    )))
    variables, history = tasks.train_stacked_autoencoder(
        model, images, pretrain_steps=150, finetune_steps=150, batch_size=32,
        learning_rate=3e-3,
    )
    assert len(history["pretrain_losses"]) == 3
    for losses in history["pretrain_losses"]:  # every level learns
        assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert history["mse_after_pretraining"] < before
    assert history["mse_after_finetuning"] < history["mse_after_pretraining"]
    out = model.apply(variables, jnp.asarray(images), train=False)
    assert out["latent"].shape == (64, 3)
