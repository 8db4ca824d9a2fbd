"""Learned registration end to end: medjax-train task=registration with each
registration model on tiny phantoms (4 forced CPU devices), and medjax-eval."""

import json
import os

import pytest

from tests.cli.test_cli import medjax, records

pytestmark = pytest.mark.slow  # every test here runs the programs

TINY = ["data=phantoms_tiny", "trainer=smoke", "optim=adam"]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """``trained(task, model)``: the directory of a finished ``medjax-train`` smoke
    run of that pair, trained once for every test of this module that reads it."""
    runs = {}

    def run_dir(task: str, model: str) -> str:
        if (task, model) not in runs:
            cwd = tmp_path_factory.mktemp("registration")
            result = medjax("medjax-train", f"task={task}", f"model={model}", *TINY,
                            "hydra.run.dir=run", data_dir=data_dir, cwd=cwd)
            assert result.returncode == 0, result.stderr[-3000:]
            assert "on 4 device(s)" in result.stderr + result.stdout
            runs[task, model] = os.path.join(cwd, "run")
        return runs[task, model]

    return run_dir


@pytest.mark.parametrize(
    "task, model",
    [
        ("registration", "voxelmorph_tiny"),
        ("registration", "voxelmorph_diff_tiny"),
        ("registration", "affine_net_tiny"),
        ("registration_ctmr", "voxelmorph_diff_tiny"),
    ],
)
def test_train_and_evaluate(task, model, trained, data_dir, tmp_path):
    run_dir = trained(task, model)
    validation = [r for r in records(run_dir) if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [2, 4]
    for record in validation:
        assert {
            "dice",
            "tre",
            "folding",
            "sd_log_jacobian",
            "hd95",
            "dice_liver",
            "initial_dice",
            "initial_tre",
            "similarity",
            "smoothness",
        } <= set(record)
        assert 0.0 <= record["dice"] <= 1.0 and record["tre"] > 0
        assert 0.0 <= record["folding"] <= 100.0
    # the same evaluation pairs at both evaluations
    assert validation[0]["initial_dice"] == validation[1]["initial_dice"]
    assert validation[0]["initial_tre"] == validation[1]["initial_tre"]
    for step in (2, 4):
        assert os.path.isfile(
            os.path.join(run_dir, "figures", f"validation_step_{step:06d}.png")
        )
    with open(os.path.join(run_dir, "summary.json")) as f:
        assert json.load(f)["best_metric"] == "dice"
    result = medjax(
        "medjax-eval", f"run_dir={run_dir}", data_dir=data_dir, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "eval.json")) as f:
        metrics = json.load(f)["metrics"]
    assert metrics["num_examples"] == 12 and 0.0 <= metrics["dice"] <= 1.0


def test_medjax_register_applies_a_trained_network(trained, data_dir, tmp_path):
    """``medjax-register method=learned run_dir=RUN`` on a NIfTI pair whose index
    axes are swapped (the moving grid's rows are the fixed grid's columns): the
    warped image it writes is the moving image read at ``M (x + d(x))``, with
    ``M`` the images' geometry (the swap) and ``d`` the restored network's field
    for the fixed image and the moving one read at ``M x``, both through the
    run's CT window."""
    import jax
    import numpy as np
    from omegaconf import OmegaConf
    from scipy import ndimage as ndi

    from medjax.config.run import build_run
    from medjax.data import io
    from medjax.data.datasets.phantoms import torso
    from medjax.engine import sharding
    from medjax.engine.evaluate import restore_checkpoint
    from medjax.engine.state import init_state

    run_dir = trained("registration", "voxelmorph_tiny")  # test_train_and_evaluate's
    case = torso.torso_slice(np.random.default_rng(3), 32)
    fixed = case["image"].astype(np.float32)  # HU
    shifted = ndi.shift(fixed, (1.5, -1.0), order=1, cval=-1000.0).astype(np.float32)
    moving = np.ascontiguousarray(shifted.T)  # moving[i, j] is shifted[j, i]
    fixed_affine = np.diag([12.5, 12.5, 1.0, 1.0])
    moving_affine = fixed_affine[:, [1, 0, 2, 3]]  # moving voxel (i, j): fixed (j, i)
    io.save_nifti(fixed, tmp_path / "fixed.nii.gz", affine=fixed_affine)
    io.save_nifti(moving, tmp_path / "moving.nii.gz", affine=moving_affine)
    result = medjax("medjax-register", "fixed=fixed.nii.gz", "moving=moving.nii.gz",
                    "output=out", "method=learned", f"run_dir={run_dir}",
                    "compilation_cache=null", data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"learned stage: step 4 of {run_dir}" in result.stdout
    with open(tmp_path / "out" / "summary.json") as f:
        summary = json.load(f)
    assert [stage["transform"] for stage in summary["stages"]] == ["learned"]
    swap = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(summary["matrix_voxels"], swap, atol=1e-6)

    # the reference: the network restored and applied here
    cfg = OmegaConf.load(os.path.join(run_dir, "config.yaml"))
    run = build_run(cfg)
    state = init_state(run.model, run.tx, run.data, run.task,
                       sharding.data_mesh(jax.devices()[:1]), cfg.seed)
    state, _ = restore_checkpoint(state, run_dir, "best", best_metric="dice")
    window = run.data.normalize
    pair = np.stack([window(fixed), window(moving).T], -1)[None]  # moving read at M x
    field = np.asarray(state.apply_fn(state.variables(), pair, train=False))[0]
    assert np.abs(field).max() > 1e-3  # a field that moves voxels
    grid = np.stack(np.mgrid[:32, :32], -1).astype(np.float32)
    warped = io.load_image(str(tmp_path / "out" / "warped.nii.gz")).array.squeeze()

    def read_moving(where):
        inside = np.all((where >= 0) & (where <= 31), -1)
        values = ndi.map_coordinates(moving, np.moveaxis(where, -1, 0), order=1,
                                     cval=moving.min())
        return values, inside

    want, inside = read_moving((grid + field)[..., ::-1])  # M (x + d)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(warped[inside], want[inside], atol=0.05)
    # the other order (M x + d) is further off than that tolerance
    other, inside = read_moving(grid[..., ::-1] + field)
    assert np.abs(warped[inside] - other[inside]).max() > 0.25
