"""The launcher and sweeper presets compose into the configs Hydra's plugins
read (SLURM itself cannot run here; the local launchers run in
tests/cli/test_sweeps.py)."""

import glob
import os

from hydra import compose, initialize_config_dir

from medjax.config import CONFIG_DIR


def hydra_node(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="train", overrides=list(overrides),
                       return_hydra_config=True).hydra


def test_every_launcher_preset_composes():
    names = [os.path.basename(p)[:-5]
             for p in glob.glob(os.path.join(CONFIG_DIR, "hydra", "launcher", "*.yaml"))]
    assert sorted(names) == ["parallel", "slurm"]
    for name in names:
        assert hydra_node(f"hydra/launcher={name}").launcher._target_.startswith(
            "hydra_plugins.")


def test_slurm_preset_takes_gpus_time_and_partition():
    launcher = hydra_node("hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                          "hydra.launcher.gpus_per_task=4", "hydra.launcher.timeout_min=90",
                          "hydra.launcher.nodes=2")
    launcher = launcher.launcher
    assert launcher._target_ == (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_task, launcher.timeout_min,
            launcher.nodes, launcher.tasks_per_node) == ("gpu", 4, 90, 2, 1)
    assert launcher.signal_delay_s == 120  # time to checkpoint after SIGTERM
    assert launcher.submitit_folder.endswith("/.submitit/%j")


def test_parallel_preset_is_joblib_with_two_jobs():
    launcher = hydra_node("hydra/launcher=parallel").launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2


def test_search_experiment_is_an_optuna_tpe_study():
    node = hydra_node("experiment=search_main_job")
    sweeper = node.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optim.lr", "optim.weight_decay", "augment"}
