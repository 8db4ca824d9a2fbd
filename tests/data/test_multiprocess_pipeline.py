"""Two jax.distributed processes (127.0.0.1, 2 CPU devices each): each reads
only its half of every global batch, and the halves assemble into the batch
one process reads whole."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from medjax.data import pipeline
from medjax.engine import distributed
from medjax.errors import ConfigError

WORKER = r"""
import json, sys
import jax
import numpy as np
from medjax.engine import distributed
assert distributed.initialize({"enabled": True, "coordinator_address": sys.argv[1],
                               "num_processes": 2, "process_id": int(sys.argv[2])})
from medjax.data import pipeline
from medjax.data.datasets.phantoms import phantoms
from medjax.engine import sharding

data = phantoms(image_size=32, split_sizes={"train": 64, "validation": 20, "test": 12},
                data_dir=sys.argv[3], batch_size=8, eval_batch_size=8)
keys = ("image", "label")
local = next(pipeline.train_batches(data.source("train"), batch_size=8, seed=0, start_step=3,
                                    num_steps=4, convert=data.convert, keys=keys))
mesh = sharding.data_mesh()
whole = sharding.to_host(pipeline.to_devices(local, sharding.batch_sharding(mesh)))
valid = [int(b["valid"].sum()) for b in pipeline.eval_batches(
    data.source("validation"), batch_size=8, convert=data.convert, keys=keys)]
print("RESULT", json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "local_devices": jax.local_device_count(), "devices": jax.device_count(),
    "mesh": int(mesh.devices.size),
    "local": np.asarray(local["image"]).sum(axis=(1, 2, 3)).tolist(),
    "global": np.asarray(whole["image"]).sum(axis=(1, 2, 3)).tolist(),
    "valid": valid,
    "stop": distributed.any_process(jax.process_index() == 1),
    "main": distributed.is_main_process(),
}))
"""


def fingerprints(batch):
    return np.asarray(batch["image"]).sum(axis=(1, 2, 3))


def test_each_process_reads_its_half_of_every_batch(data_dir, tiny_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    processes = [
        subprocess.Popen([sys.executable, "-c", WORKER, address, str(rank), data_dir],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        # (gloo prints its connections to stdout too)
        result = [line for line in out.splitlines() if line.startswith("RESULT ")]
        outputs.append(json.loads(result[0].removeprefix("RESULT ")))
    first, second = outputs
    for rank, out in enumerate(outputs):
        assert (out["process"], out["processes"], out["local_devices"], out["devices"],
                out["mesh"]) == (rank, 2, 2, 4, 4)
        assert out["stop"] is True  # process 1's flag reaches process 0
        assert out["main"] is (rank == 0)
    # the batch of step 3 as one process reads it whole
    whole = fingerprints(next(pipeline.train_batches(
        tiny_data.source("train"), batch_size=8, seed=0, start_step=3, num_steps=4,
        convert=tiny_data.convert, keys=("image", "label"))))
    np.testing.assert_allclose(first["local"], whole[:4], rtol=1e-6)
    np.testing.assert_allclose(second["local"], whole[4:], rtol=1e-6)
    assert not set(first["local"]) & set(second["local"])
    for out in outputs:  # assembled across processes: the whole batch on every one
        np.testing.assert_allclose(out["global"], whole, rtol=1e-6)
    # validation: 20 examples in 3 batches of 8, each counted once over both
    assert np.add(first["valid"], second["valid"]).tolist() == [8, 8, 4]


def test_options_come_from_the_command_line_then_the_environment():
    environ = {"MEDJAX_DISTRIBUTED": "1", "MEDJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
               "MEDJAX_NUM_PROCESSES": "4", "MEDJAX_PROCESS_ID": "3",
               "MEDJAX_LOCAL_DEVICE_IDS": "0,1"}
    assert distributed.resolve_options({}, {}) is None  # off by default
    assert distributed.resolve_options({"enabled": False}, environ) is None
    assert distributed.resolve_options({}, environ) == {
        "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
        "local_device_ids": [0, 1]}
    given = distributed.resolve_options(
        {"enabled": True, "process_id": 1, "initialization_timeout": 60}, environ)
    assert given["process_id"] == 1 and given["initialization_timeout"] == 60
    # on a cluster JAX detects (SLURM), nulls are left for it to fill
    assert distributed.resolve_options({"enabled": True}, {}) == {
        "coordinator_address": None, "num_processes": None, "process_id": None,
        "local_device_ids": None}


def test_options_that_cannot_work_fail_in_one_line():
    with pytest.raises(ConfigError, match="process_id=2: expected below"):
        distributed.resolve_options({"enabled": True, "num_processes": 2, "process_id": 2})
    with pytest.raises(ConfigError, match="MEDJAX_DISTRIBUTED"):
        distributed.resolve_options({}, {"MEDJAX_DISTRIBUTED": "maybe"})
    with pytest.raises(ConfigError, match="num_processes: expected a non-negative"):
        distributed.resolve_options({"enabled": True, "num_processes": "two"}, {})
