"""The learned stage of medjax-register (``medjax.inferers.learned_registration``):
a network's transform composed with the map it starts from, by hand-worked
cases; the stage order rules. A trained run end to end is in
tests/cli/test_cli_registration.py."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data.io.volume import Volume
from medjax.errors import ConfigError
from medjax.inferers import learned_registration as learned
from medjax.inferers import registration as files
from medjax.losses import registration as registration_losses
from medjax.tasks.registration.task import RegistrationTask

SIZE = 16


def _blob(centre):
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / 8.0).astype(np.float32)


def _translation(shift):
    matrix = np.eye(3, dtype=np.float32)
    matrix[:2, 2] = shift
    return matrix


def _model(apply):
    task = RegistrationTask(similarity="ssd", landmarks_key=None)
    identity = np.asarray
    return learned.LearnedModel(apply=apply, task=task, spatial_dims=2,
                                normalize_fixed=identity, normalize_moving=identity,
                                spacing=None, step=7, run_dir="run")


def _volume(source="nifti"):
    return Volume(array=np.zeros((SIZE, SIZE)), affine=np.eye(4), source=source)


def test_a_dense_field_is_composed_after_the_starting_map():
    # the network moves every voxel by (0, 1); the starting map by (2, 0):
    # fixed voxel x reads moving voxel M (x + d) = x + (2, 1)
    fixed, moving = _blob((6, 6)), _blob((8, 7))
    seen = {}

    def network(x):
        seen["inputs"] = x
        return jnp.broadcast_to(jnp.asarray([0.0, 1.0]), (1, SIZE, SIZE, 2))

    stage = _model(network).stage(_volume(), _volume(), fixed, moving)
    out = stage(None, None, jnp.asarray(_translation((2, 0)))[None])
    np.testing.assert_allclose(out["displacement"][0], np.broadcast_to([2.0, 1.0],
                                                                       (SIZE, SIZE, 2)))
    np.testing.assert_allclose(out["matrix"][0], _translation((2, 0)))  # the linear part
    # the network saw the fixed image and the moving one read at x + (2, 0)
    np.testing.assert_allclose(seen["inputs"][0, ..., 0], fixed)
    want = np.full((SIZE, SIZE), moving.min(), np.float32)
    want[: SIZE - 2] = moving[2:]
    np.testing.assert_allclose(seen["inputs"][0, ..., 1], want, atol=1e-6)
    # loss: SSD before the network's field, then after it (the pair aligned)
    after = np.full((SIZE, SIZE), moving.min(), np.float32)
    after[: SIZE - 2, : SIZE - 1] = moving[2:, 1:]
    ssd = [registration_losses.sum_of_squared_differences(fixed[None, ..., None] - fixed.min(),
                                   image[None, ..., None] - moving.min())[0]
           for image in (want, after)]
    np.testing.assert_allclose(out["loss"][0], ssd, rtol=1e-5)
    assert float(out["loss"][0, 1]) < float(out["loss"][0, 0])


def test_an_affine_output_is_multiplied_onto_the_starting_map():
    network_matrix = _translation((0, 1))

    def network(x):
        return jnp.asarray(network_matrix)[None]

    stage = _model(network).stage(_volume(), _volume(), _blob((6, 6)), _blob((8, 7)))
    out = stage(None, None, jnp.asarray(_translation((2, 0)))[None])
    np.testing.assert_allclose(out["matrix"][0], _translation((2, 1)))
    np.testing.assert_allclose(out["displacement"][0], np.broadcast_to([2.0, 1.0],
                                                                       (SIZE, SIZE, 2)))


def test_inputs_in_the_training_convention():
    model = _model(None)
    model = learned.LearnedModel(**{**model.__dict__, "normalize_fixed": lambda a: a / 10})
    stage = model.stage(_volume(), _volume("png"), np.full((SIZE, SIZE), 50.0),
                        np.full((SIZE, SIZE), 255.0))
    np.testing.assert_allclose(stage.fixed, 5.0)  # through the run's normalisation
    np.testing.assert_allclose(stage.moving, 1.0)  # a PNG: 0..255 -> [-1, 1]
    with pytest.raises(ConfigError, match=r"a 2D registration network cannot register 3D"):
        model.stage(_volume(), _volume(), np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))


def test_the_learned_stage_comes_last():
    files.check_stages(["rigid", "affine", "learned"])
    with pytest.raises(ConfigError, match=r"a learned stage \(learned\) must come last"):
        files.check_stages(["learned", "affine"])
    with pytest.raises(ConfigError, match=r"a deformable stage \(dense\) must come last"):
        files.check_stages(["dense", "learned"])
