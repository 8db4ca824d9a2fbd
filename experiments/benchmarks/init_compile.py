"""Start-up: how long XLA takes to compile a run's initialisation, with the PRNG
key medjax uses (``medjax.runtime.random_key``) against ``jax.random.key``.

Both keys give the same numbers bit for bit (``tests/test_random_key.py``); the
difference is only in how threefry's draws are written for XLA. For each
configuration this times ``medjax.engine.state.init_state`` (sample batch,
``model.init``, optimizer state; compile and run, as ``medjax-train`` pays it
before its first step), once with each key after an untimed warm-up, in one
process, and checks that the two parameter trees are identical.

    python experiments/benchmarks/init_compile.py
"""

import argparse
import time

import jax
import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.engine import sharding
from medjax.engine import state as state_module
from medjax.runtime import random_key

CONFIGS = {
    "main job (cnn_small, 64² slices)": [],
    "U-Net, 2D organs": ["task=segmentation", "model=unet_small"],
    "VoxelMorph-style, 2D pairs": ["experiment=registration_voxelmorph"],
    "3D U-Net, 3D organs": ["experiment=segmentation3d"],
}


def timed_init(run, mesh, key_function) -> tuple[float, object]:
    state_module.random_key = key_function
    try:
        start = time.perf_counter()
        state = jax.block_until_ready(
            state_module.init_state(run.model, run.tx, run.data, run.task, mesh, 0))
        return time.perf_counter() - start, state
    finally:
        state_module.random_key = random_key


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    mesh = sharding.data_mesh(jax.devices())
    print(f"jax {jax.__version__}, {jax.device_count()} device(s)")
    print("\n| configuration | jax.random.key (s) | random_key (s) | ratio | same parameters |")
    print("|---|---:|---:|---:|---|")
    for name in args.configs:
        run = build_run(compose("train", CONFIGS[name]))
        timed_init(run, mesh, random_key)  # untimed warm-up: data read, libraries loaded
        slow, before = timed_init(run, mesh, lambda seed: jax.random.key(seed))
        fast, after = timed_init(run, mesh, random_key)
        same = all(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(before.params), jax.tree.leaves(after.params)))
        print(f"| {name} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
