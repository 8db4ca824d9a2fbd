"""What the non-finite guard costs: training-step time of the default main job
(``medjax-train`` with conf/train.yaml's defaults: cnn_small, phantoms2d 64 x 64,
batch 32, AdamW) with the guard (``isfinite`` of the loss and of the global
gradient norm, and a ``lax.cond`` keeping the previous state) and without it.

Both steps are jitted once with the loop's shardings and donation and then
timed in alternation (each first in every other repeat) on the same batches, so
drift of a shared machine falls on both alike; the figure is the median over repeats of the time of
``--steps`` steps (``block_until_ready`` at the end of each repeat).

Run:  python experiments/benchmarks/nonfinite_guard.py [--repeats 15] [OVERRIDES]

OVERRIDES are medjax-train's (e.g. ``data.split_sizes="{train: 256, validation:
32, test: 32}"`` builds a smaller phantom set: the step's shapes, hence its
time, do not depend on the split sizes).
"""

import argparse
import statistics
import time

import jax

from medjax.config import compose
from medjax.config.run import build_run
from medjax.data import pipeline
from medjax.engine import sharding
from medjax.engine.evaluate import configured
from medjax.engine.state import count_params, init_state
from medjax.engine.step import compile_steps


def time_steps(train_fn, state, batches, key) -> tuple[float, object]:
    """Seconds for one pass over ``batches``, and the state after it."""
    start = time.perf_counter()
    for batch in batches:
        state, metrics = train_fn(state, batch, key)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - start, state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per repeat")
    parser.add_argument("overrides", nargs="*", help="medjax-train overrides")
    args = parser.parse_args()

    cfg = compose("train", args.overrides)
    run = build_run(cfg)
    task = configured(run.task, run.data)
    mesh = sharding.data_mesh()
    data_sharding = sharding.batch_sharding(mesh)
    batches = [
        pipeline.to_devices(batch, data_sharding)
        for batch in pipeline.train_batches(
            run.data.source(run.data.train_split), batch_size=run.data.batch_size,
            seed=0, start_step=0, num_steps=args.steps, convert=run.data.convert,
            keys=task.batch_keys,
        )
    ]
    key = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    steps, states = {}, {}
    for guard in (True, False):
        steps[guard], _ = compile_steps(task, mesh, run.augment, guard=guard)
        states[guard] = init_state(run.model, run.tx, run.data, task, mesh, cfg.seed)
        # the first pass compiles
        _, states[guard] = time_steps(steps[guard], states[guard], batches, key)
    times = {True: [], False: []}
    for repeat in range(args.repeats):
        # alternate which goes first: neither gets the warmer caches every time
        for guard in (True, False) if repeat % 2 else (False, True):
            seconds, states[guard] = time_steps(
                steps[guard], states[guard], batches, key
            )
            times[guard].append(seconds / len(batches))
    with_guard, without = (statistics.median(times[g]) for g in (True, False))
    image = batches[0]["image"].shape
    print(
        f"model {cfg.model._target_.rsplit('.', 1)[-1]} "
        f"({count_params(states[True].params):,} parameters), batch {image}, "
        f"{mesh.devices.size} {jax.default_backend()} device(s), "
        f"median of {args.repeats} x {len(batches)} steps"
    )
    print(f"step without guard: {without * 1e3:8.2f} ms")
    print(f"step with guard:    {with_guard * 1e3:8.2f} ms")
    print(f"ratio with / without: {with_guard / without:.4f} "
          f"({(with_guard / without - 1) * 100:+.2f} %)")


if __name__ == "__main__":
    main()
