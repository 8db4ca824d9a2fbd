"""Resuming a run directory with a configuration that changes what is learned."""

import os

import pytest
import yaml
from hydra import compose, initialize_config_dir

from medjax.config import CONFIG_DIR
from medjax.config.resume import IGNORED_KEYS, check_resume, differences, flatten
from medjax.errors import RunDirectoryError

STORED = {
    "seed": 0,
    "name": "default",
    "optim": {"name": "adamw", "lr": 0.001, "betas": [0.9, 0.999]},
    "model": {"_target_": "medjax.models.cnn.cnn_tiny", "features": 8},
    "data": {"data_dir": "/data/a", "num_threads": 4, "batch_size": 8},
    "trainer": {"max_steps": 900, "eval_every": 100, "best_metric": "auroc"},
}


def changed(config, **updates):
    """``config`` with dotted ``updates`` (``optim__lr=0.01``: ``optim.lr``)."""
    config = yaml.safe_load(yaml.safe_dump(config))
    for dotted, value in updates.items():
        *parents, key = dotted.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    return config


def test_flatten_gives_dotted_keys_and_keeps_lists_whole():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": {},
    }


def test_what_is_learned_differs_key_by_key():
    new = changed(
        STORED, optim__lr=0.01, model__features=16, data__batch_size=4, seed=1
    )
    assert differences(STORED, new) == [
        "data.batch_size: 8 -> 4",
        "model.features: 8 -> 16",
        "optim.lr: 0.001 -> 0.01",
        "seed: 0 -> 1",
    ]


def test_keys_only_one_side_has_and_nested_lists_differ_too():
    new = changed(STORED, optim__betas=[0.9, 0.99], trainer__best_mode="min")
    del new["model"]["features"]
    assert differences(STORED, new) == [
        "model.features: 8 -> (absent)",
        "optim.betas: [0.9, 0.999] -> [0.9, 0.99]",
        "trainer.best_mode: (absent) -> 'min'",
    ]


def test_how_long_where_and_how_visibly_may_change():
    new = changed(
        STORED, name="longer", trainer__max_steps=2000, trainer__eval_every=50,
        data__data_dir="/data/b", data__num_threads=1,
    )
    assert differences(STORED, new) == []


def test_the_ignored_keys_are_those_hydra_leaves_out_of_the_run_directory_name():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="train", return_hydra_config=True)
    assert set(IGNORED_KEYS) == set(cfg.hydra.job.config.override_dirname.exclude_keys)


def _run_dir(tmp_path, *, checkpoints=True):
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump(STORED, f)
    if checkpoints:
        os.makedirs(tmp_path / "checkpoints" / "100")
    return str(tmp_path)


def test_a_changed_learning_rate_is_refused_in_one_line(tmp_path):
    run_dir = _run_dir(tmp_path)
    with pytest.raises(RunDirectoryError) as error:
        check_resume(run_dir, changed(STORED, optim__lr=0.01))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{run_dir}: ")
    assert "(optim.lr: 0.001 -> 0.01)" in message


def test_many_differences_are_listed_up_to_a_few(tmp_path):
    run_dir = _run_dir(tmp_path)
    new = changed(STORED, model={f"k{i}": i for i in range(12)})  # 14 keys differ
    with pytest.raises(RunDirectoryError) as error:
        check_resume(run_dir, new)
    listed = str(error.value).split("learned (")[1].split("): ")[0].split("; ")
    assert len(listed) == 9 and listed[-1] == "and 6 more"
    assert listed[0] == "model._target_: 'medjax.models.cnn.cnn_tiny' -> (absent)"


def test_the_same_config_or_no_checkpoints_yet_resume(tmp_path):
    check_resume(_run_dir(tmp_path), changed(STORED, trainer__max_steps=5000))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # config.yaml but no committed checkpoint (stopped before the first save, or
    # killed during it): nothing learned to protect.
    check_resume(_run_dir(fresh, checkpoints=False), changed(STORED, optim__lr=1.0))
    os.makedirs(fresh / "checkpoints" / "10.orbax-checkpoint-tmp-123")
    check_resume(str(fresh), changed(STORED, optim__lr=1.0))


def test_an_unreadable_stored_config_is_named(tmp_path):
    run_dir = _run_dir(tmp_path)
    (tmp_path / "config.yaml").write_text("optim: {lr: [unclosed\n")
    with pytest.raises(RunDirectoryError, match="config.yaml: unreadable"):
        check_resume(run_dir, STORED)


def test_runs_made_before_an_option_existed_resume_with_its_old_behaviour():
    # trainer.precision came later: absent from a stored config it means fp32
    assert differences(STORED, changed(STORED, trainer__precision="fp32")) == []
    assert differences(STORED, changed(STORED, trainer__precision="bf16")) == [
        "trainer.precision: 'fp32' -> 'bf16'"]
