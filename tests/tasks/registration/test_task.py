"""RegistrationTask: pairs with their true transform, fixed evaluation pairs,
metrics in the registration conventions, a loss a network can lower, and one
line for data without the fields it needs."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.data import pipeline
from medjax.data import schema as roles
from medjax.models.registration.voxelmorph import voxelmorph_tiny
from medjax.runtime import random_key
from medjax.tasks.base import TaskDataMismatch
from medjax.tasks.registration.task import RegistrationTask


def _batch(data, task, indices, split="validation"):
    batch = pipeline.read_examples(
        data.source(split), np.asarray(indices), data.convert, task.batch_keys
    )
    batch["valid"] = np.ones(len(indices), bool)
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.fixture(scope="module")
def task(tiny_data):
    return RegistrationTask().configure(tiny_data)


def test_configure_reads_spacing_and_the_landmarks_validity(task, tiny_data):
    assert task.spacing == tuple(tiny_data.spacing) == (12.5, 12.5)
    assert task.batch_keys == ("image", "organ_mask", "landmarks", "landmarks_valid")
    ctmr = RegistrationTask(moving_image_key="mr_image").configure(tiny_data)
    assert "mr_image" in ctmr.batch_keys


def test_evaluation_pairs_are_a_function_of_the_example(task, tiny_data):
    first = task.prepare_batch(
        random_key(0), _batch(tiny_data, task, [0, 1, 2, 3]), train=False
    )
    again = task.prepare_batch(
        random_key(7), _batch(tiny_data, task, [2, 3, 0, 1]), train=False
    )
    np.testing.assert_array_equal(first["moving"][:2], again["moving"][2:])
    np.testing.assert_array_equal(
        first["moving_points"][2:], again["moving_points"][:2]
    )
    assert not np.allclose(first["moving"][0], first["moving"][1])
    assert not np.allclose(first["moving"], first["fixed"], atol=1e-2)
    # training pairs are new with every key
    batch = _batch(tiny_data, task, [0, 1])
    a = task.prepare_batch(random_key(0), batch, train=True)["moving"]
    b = task.prepare_batch(random_key(1), batch, train=True)["moving"]
    assert not np.allclose(a, b, atol=1e-2)


def test_the_true_field_registers_the_pair_and_identity_metrics_are_the_pairs(
    task, tiny_data
):
    pairs = task.prepare_batch(None, _batch(tiny_data, task, [0, 1, 2, 3]), train=False)
    true = task._true_field(pairs)
    _, at_truth = task.loss(true, pairs)
    _, at_identity = task.loss(jnp.zeros_like(true), pairs)
    # The true field undoes the deformation: labels overlap, landmarks meet
    # (< 0.1 voxel of 12.5 mm), so the pairs, points and metrics agree on the
    # conventions; the identity leaves them apart.
    assert float(at_truth["dice"].mean()) > 0.9
    assert float(at_identity["dice"].mean()) < 0.6
    assert float(at_truth["tre"].mean()) < 1.25
    assert float(at_identity["tre"].mean()) > 10.0
    assert float(at_truth["similarity"].mean()) < float(
        at_identity["similarity"].mean()
    )
    np.testing.assert_array_equal(at_identity["folding"], 0.0)
    np.testing.assert_allclose(at_identity["sd_log_jacobian"], 0.0, atol=1e-6)
    np.testing.assert_array_equal(at_identity["smoothness"], 0.0)
    # An affine output is its field: the identity matrix gives the zero field.
    eye = jnp.broadcast_to(jnp.eye(3), (4, 3, 3))
    np.testing.assert_allclose(task.displacement(eye, pairs), 0.0, atol=1e-6)
    host = jax.device_get(task.host_outputs(true, pairs))
    split = task.split_metrics(host)
    assert split["dice"] > 0.9 and split["initial_dice"] < 0.6
    assert split["tre"] < 1.25 and split["hd95"] < 12.5


def test_ct_to_mr_pairs_warp_the_mr_twin(tiny_data):
    task = RegistrationTask(moving_image_key="mr_image", similarity="mi").configure(
        tiny_data
    )
    batch = _batch(tiny_data, task, [0, 1])
    pairs = task.prepare_batch(None, batch, train=False)
    restored = task.warp(pairs["moving"], task._true_field(pairs))
    inside = np.asarray(pairs["fixed_labels"]) > 0
    mr = np.asarray(batch["mr_image"])[..., 0][inside]
    ct = np.asarray(batch["image"])[..., 0][inside]
    found = np.asarray(restored)[..., 0][inside]
    # the MR twin, moved and moved back (blurred by two linear interpolations)
    to_mr, to_ct = np.corrcoef(found, mr)[0, 1], np.corrcoef(found, ct)[0, 1]
    assert to_mr > 0.8 and to_mr > to_ct + 0.1, (to_mr, to_ct)


def test_the_loss_decreases_over_a_few_steps(task, tiny_data):
    pairs = task.prepare_batch(
        None, _batch(tiny_data, task, list(range(8))), train=False
    )
    model = voxelmorph_tiny(spatial_dims=2)
    inputs = task.inputs(pairs)
    assert inputs.shape == (8, 32, 32, 2)
    params = model.init(random_key(0), inputs, train=False)["params"]
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, state):
        def objective(p):
            return task.loss(model.apply({"params": p}, inputs, train=False), pairs)[0]

        loss, grads = jax.value_and_grad(objective)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    state, history = tx.init(params), []
    for _ in range(25):
        params, state, loss = step(params, state)
        history.append(float(loss))
    assert history[-1] < history[0] - 0.01, history


def test_data_without_the_fields_fails_with_one_line():
    cine = types.SimpleNamespace(
        schema={"image": roles.image(time=True), "mask": roles.label_map(time=True)},
        name="medjax_phantoms/cine2d_16",
        spacing=None,
    )
    with pytest.raises(
        TaskDataMismatch,
        match=r"^task=registration needs a label_map "
        r"field 'organ_mask'; data=medjax_phantoms/cine2d_16 has no field",
    ):
        RegistrationTask().configure(cine, task_name="registration")
    tabular = types.SimpleNamespace(
        schema={"features": roles.TABULAR}, name="breast_cancer", spacing=None
    )
    with pytest.raises(
        TaskDataMismatch, match=r"needs an image field 'image'"
    ) as error:
        RegistrationTask().configure(tabular, task_name="registration")
    assert "\n" not in str(error.value)


def test_bad_options_fail_with_one_line():
    with pytest.raises(ValueError, match=r"task.similarity: expected one of"):
        RegistrationTask(similarity="cosine")
    with pytest.raises(ValueError, match=r"task.regularization: expected >= 0"):
        RegistrationTask(regularization=-1.0)


def test_volumes_register_through_the_same_hooks(tmp_path):
    # A small synthetic volume: a bright ellipsoid (label 1) with a core (label 2).
    shape = (12, 13, 10)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    radius = np.sqrt((((grid - np.array(shape) / 2) / (np.array(shape) / 3)) ** 2).sum(-1))
    labels = np.where(radius < 0.5, 2, np.where(radius < 1.0, 1, 0)).astype(np.int32)
    image = (labels * 0.5 - 1.0).astype(np.float32)[..., None]
    batch = {
        "image": jnp.asarray(np.stack([image, image])),
        "organ_mask": jnp.asarray(np.stack([labels, labels])),
        "landmarks": jnp.asarray([[[6.0, 6.5, 5.0]]] * 2),
        "landmarks_valid": jnp.ones((2, 1), bool),
        "valid": jnp.array([True, False]),
    }
    data = types.SimpleNamespace(
        schema={"image": roles.image(), "organ_mask": roles.label_map(),
                "landmarks": roles.points(valid="landmarks_valid"),
                "landmarks_valid": roles.VALID},
        name="volumes", spacing=(2.0, 2.0, 3.0),
    )
    task = RegistrationTask(num_classes=3, num_figure_cases=1).configure(data)
    pairs = task.prepare_batch(None, batch, train=False)
    assert pairs["moving"].shape == (2, *shape, 1)
    assert pairs["pair_displacement"].shape == (2, *shape, 3)
    model = voxelmorph_tiny(spatial_dims=3)
    inputs = task.inputs(pairs)
    outputs = model.apply(model.init(random_key(0), inputs, train=False), inputs,
                          train=False)
    loss, per_pair = task.loss(outputs, pairs)
    assert np.isfinite(float(loss)) and per_pair["dice"].shape == (2,)
    assert float(per_pair["dice"][1]) == 0.0  # the padded pair counts nothing
    host = jax.device_get(task.host_outputs(outputs, pairs))
    assert host["figure_fixed"].shape == (2, 12, 13)  # the middle axial slice
    assert host["figure_field"].shape == (2, 12, 13, 2)
    split = task.split_metrics({k: v[:1] for k, v in host.items()})
    assert 0.0 <= split["dice"] <= 1.0 and split["tre"] >= 0.0
    task.draw_cases(host, str(tmp_path / "cases.png"), "volumes")
    assert (tmp_path / "cases.png").stat().st_size > 1000
