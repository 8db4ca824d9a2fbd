"""Training-step time of the CNN classifiers with ``conv_impl=xla`` against
``conv_impl=cpu`` (medjax.models.fast_layers and fast_strided), in one run.

A step is forward (BatchNorm in training mode, dropout), softmax cross-entropy,
backward and an Adam update, jitted with medjax's CPU compiler options
(``medjax.runtime.compiler_options``, as ``medjax-train`` compiles every step), so
only the convolutions' formulation differs. The two variants of a case are timed
interleaved (2 warm-up rounds, then ``--repeats`` timed ones) so that load from
other processes hits both alike; medians, and xla / cpu.

    python experiments/benchmarks/cnn_fast_path.py [--repeats 5] [--cases ...]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.models import cnn
from medjax.runtime import compiler_options

# name: (model factory keyword arguments, input shape)
CASES = {
    # the main job's step (conf/train.yaml: cnn_small, 32 x 64^2 phantom slices)
    "cnn_small 2D, 32 x 64^2": ({"preset": "cnn_small"}, (32, 64, 64, 1)),
    "cnn_small 3D 8-16-32, 8 x 32^3": (
        {"preset": "cnn_small", "widths": (8, 16, 32), "spatial_dims": 3},
        (8, 32, 32, 32, 1),
    ),
    "cnn_small 3D 16-32-64, 8 x 32^3": (
        {"preset": "cnn_small", "widths": (16, 32, 64), "spatial_dims": 3},
        (8, 32, 32, 32, 1),
    ),
    "resnet_small 2D, 32 x 64^2": ({"preset": "resnet_small"}, (32, 64, 64, 1)),
}


def train_step_runner(fields: dict, shape: tuple, impl: str):
    """A compiled training step of the model and a function that runs it once."""
    fields = dict(fields)
    model = getattr(cnn, fields.pop("preset"))(num_classes=2, conv_impl=impl, **fields)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, shape[0]), jnp.int32)
    options = compiler_options("cpu")
    variables = jax.jit(
        lambda k, x: model.init(k, x, train=False), compiler_options=options
    )(jax.random.key(0), x)
    tx = optax.adam(1e-3)
    opt_state = tx.init(variables["params"])

    def loss(params, stats, x, y, key):
        logits, updates = model.apply(
            {"params": params, "batch_stats": stats},
            x,
            train=True,
            rngs={"dropout": key},
            mutable=["batch_stats"],
        )
        value = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return value, updates["batch_stats"]

    def step(params, stats, opt_state, x, y, key):
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(
            params, stats, x, y, key
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, value

    args = (variables["params"], variables["batch_stats"], opt_state, x, y)
    key = jax.random.key(1)
    start = time.perf_counter()
    compiled = jax.jit(step, compiler_options=options).lower(*args, key).compile()
    compile_s = time.perf_counter() - start

    def run():
        jax.block_until_ready(compiled(*args, key))

    return run, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    print(
        f"jax {jax.__version__}, {jax.device_count()} CPU device(s); training step "
        f"(forward, loss, backward, Adam), median of {args.repeats} after "
        f"{args.warmup} warm-up, xla and cpu interleaved"
    )
    print("| case | xla | cpu | xla / cpu | compile xla, cpu |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.cases:
        fields, shape = CASES[name]
        runners, compile_s = {}, {}
        for impl in ("xla", "cpu"):
            runners[impl], compile_s[impl] = train_step_runner(fields, shape, impl)
        times = {impl: [] for impl in runners}
        for _ in range(args.warmup):
            for run in runners.values():
                run()
        for _ in range(args.repeats):
            for impl, run in runners.items():
                start = time.perf_counter()
                run()
                times[impl].append(time.perf_counter() - start)
        ms = {impl: 1e3 * float(np.median(t)) for impl, t in times.items()}
        print(
            f"| {name} | {ms['xla']:.1f} ms | {ms['cpu']:.1f} ms | "
            f"**{ms['xla'] / ms['cpu']:.2f}x** | {compile_s['xla']:.1f} s, "
            f"{compile_s['cpu']:.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
