"""Training-step throughput in ``trainer.precision=fp32`` against ``bf16``, in
one run: the main job's step (``medjax-train``'s defaults: cnn_small on 32 x 64²
phantom slices) and a U-Net segmentation step (``unet_small``, 16 x 128²
slices), each medjax's own jitted ``train_step`` over all devices.

    python experiments/benchmarks/precision_step.py [--repeats 20] [--batches 1 4]

On a CPU bfloat16 has no fast path (XLA converts around float32 kernels), so
expect bf16 slower there; on a GPU's tensor cores (or a TPU) it is the fast
one. ``experiments/benchmarks/accelerator_check.sh`` runs this on a GPU.
"""

import argparse
import time

import jax
import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.evaluate import configured
from medjax.engine.state import init_state
from medjax.engine.step import compile_steps
from medjax.runtime import random_key

CASES = {
    "main job: cnn_small, 32 x 64²": [],
    "U-Net: unet_small, 16 x 128²": ["task=segmentation", "model=unet_small",
                                     "data=phantoms2d_128", "data.batch_size=16"],
}


def images_per_second(overrides: list[str], precision: str, repeats: int,
                      scale: int) -> float:
    """Median throughput of ``repeats`` steps after 2 warm-up steps, the batch
    ``scale`` times the config's (per device count)."""
    run = build_run(compose("train", [*overrides, "trainer.max_steps=1000"]))
    mesh = sharding.data_mesh()
    batch_size = run.data.batch_size * scale
    task = configured(run.task, run.data)
    state = init_state(run.model, run.tx, run.data, task, mesh, 0)
    train_fn, _ = compile_steps(task, mesh, precision=precision)
    batch = next(pipeline.train_batches(
        run.data.source(run.data.train_split), batch_size=batch_size, seed=0,
        start_step=0, num_steps=1, convert=run.data.convert, keys=task.batch_keys))
    batch = pipeline.to_devices(batch, sharding.batch_sharding(mesh))
    key, times = random_key(0), []
    for i in range(repeats + 2):
        start = time.perf_counter()
        state, metrics = train_fn(state, batch, key)
        jax.block_until_ready(metrics)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return batch_size / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1],
                        help="multiples of each config's batch size")
    args = parser.parse_args()
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}")
    print("| step | batch x | fp32 img/s | bf16 img/s | bf16 / fp32 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, overrides in CASES.items():
        for scale in args.batches:
            fp32 = images_per_second(overrides, "fp32", args.repeats, scale)
            bf16 = images_per_second(overrides, "bf16", args.repeats, scale)
            print(f"| {name} | {scale} | {fp32:.0f} | {bf16:.0f} | {bf16 / fp32:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
