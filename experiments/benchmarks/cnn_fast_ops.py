"""Per-layer timing behind medjax.models.fast_strided's choices: forward plus
backward (input and kernel gradients; kernel only for the one-channel stems,
whose image gradient a training step drops) of each strided convolution and of
the stem's max pooling at the shapes of cnn_small, resnet_small and the 3D CNNs,
``xla`` (what ``nn.Conv`` / ``nn.max_pool`` compute) against the ``cpu``
formulations, compiled with medjax's CPU options, timed interleaved in one run.

    python experiments/benchmarks/cnn_fast_ops.py [--repeats 5]
"""

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from medjax.models import fast_layers, fast_strided
from medjax.runtime import compiler_options


def _subsampled_stride1(x, kernel, strides, padding):
    """A candidate for 2D: the stride-1 'SAME' convolution (medjax's kernels),
    then every ``s``-th output (4x the arithmetic at stride 2)."""
    *k, _, _ = kernel.shape
    pads = fast_strided.explicit_pads(x.shape[1:-1], k, strides, padding)
    y = fast_layers.conv_cpu(x, kernel)
    index = [slice(None)]
    for n, kk, s, (lo, hi) in zip(x.shape[1:-1], k, strides, pads):
        start = (kk - 1) // 2 - lo
        size = (n + lo + hi - kk) // s + 1
        index.append(slice(start, start + s * (size - 1) + 1, s))
    return y[tuple(index)]


def conv_case(batch, spatial, cin, cout, k, pad="SAME", input_grad=True):
    dims = len(spatial)
    x_shape = (batch, *spatial, cin)
    k_shape = (k,) * dims + (cin, cout)
    padding = pad if pad == "SAME" else [(pad, pad)] * dims
    args = {"strides": (2,) * dims, "padding": padding}
    fns = {
        "xla": partial(fast_strided.conv_general_xla, **args),
        "cpu": partial(fast_strided.conv_general_cpu, **args),
    }
    if dims == 2 and k > 1 and pad == "SAME" and cout % 16 == 0:
        fns["stride-1 kernel, subsampled"] = partial(_subsampled_stride1, **args)
    label = f"conv {k}^{dims}/2 {batch}x{'x'.join(map(str, spatial))}x{cin}->{cout}"
    return label, fns, (x_shape, k_shape), (0, 1) if input_grad else (1,)


def pool_case(batch, spatial, c):
    dims = len(spatial)
    args = ((3,) * dims, (2,) * dims, [(1, 1)] * dims)
    fns = {
        "xla": lambda x: fast_strided.max_pool_xla(x, *args),
        "cpu": lambda x: fast_strided.max_pool_cpu(x, *args),
    }
    label = f"max pool 3^{dims}/2 {batch}x{'x'.join(map(str, spatial))}x{c}"
    return label, fns, ((batch, *spatial, c),), (0,)


CASES = [
    # cnn_small 2D, 32 x 64^2: the first blocks of stages 1-3
    conv_case(32, (64, 64), 16, 32, 3),
    conv_case(32, (32, 32), 32, 64, 3),
    conv_case(32, (16, 16), 64, 128, 3),
    # resnet_small 2D, 32 x 64^2: strided blocks and 1x1 projections
    conv_case(32, (64, 64), 32, 64, 3),
    conv_case(32, (64, 64), 32, 64, 1),
    conv_case(32, (32, 32), 64, 128, 1),
    conv_case(32, (16, 16), 128, 256, 1),
    # 3D CNNs, 8 x 32^3, widths 8-16-32 and 16-32-64
    conv_case(8, (32, 32, 32), 8, 16, 3),
    conv_case(8, (16, 16, 16), 16, 32, 3),
    conv_case(8, (32, 32, 32), 16, 32, 3),
    conv_case(8, (16, 16, 16), 32, 64, 3),
    conv_case(8, (32, 32, 32), 16, 32, 1),
    # imagenet stems (7^d / 2, padding 3, one input channel) and their pooling
    conv_case(32, (64, 64), 1, 16, 7, pad=3, input_grad=False),
    conv_case(8, (32, 32, 32), 1, 16, 7, pad=3, input_grad=False),
    pool_case(32, (32, 32), 16),
    pool_case(8, (16, 16, 16), 16),
]


def _program(fn, shapes, argnums, options):
    args = [
        jnp.asarray(np.random.default_rng(i).standard_normal(s), jnp.float32)
        for i, s in enumerate(shapes)
    ]
    out = jax.eval_shape(fn, *args)
    cotangent = jnp.asarray(np.random.default_rng(9).standard_normal(out.shape))

    def loss(*a):
        return jnp.sum(fn(*a) * cotangent)

    run = jax.jit(jax.grad(loss, argnums=argnums), compiler_options=options)
    return lambda: jax.block_until_ready(run(*args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    options = compiler_options("cpu")
    print(
        f"jax {jax.__version__}, {jax.device_count()} CPU device(s); ms per "
        f"forward + backward, median of {args.repeats} after {args.warmup} warm-up"
    )
    print("| layer | xla | cpu | xla / cpu | other candidate |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, fns, shapes, argnums in CASES:
        programs = {n: _program(f, shapes, argnums, options) for n, f in fns.items()}
        times = {n: [] for n in programs}
        for _ in range(args.warmup):
            for program in programs.values():
                program()
        for _ in range(args.repeats):  # interleaved: noise hits every candidate
            for name, program in programs.items():
                start = time.perf_counter()
                program()
                times[name].append(time.perf_counter() - start)
        ms = {n: 1e3 * float(np.median(t)) for n, t in times.items()}
        other = "; ".join(
            f"{n}: {v:.2f} ms" for n, v in ms.items() if n not in ("xla", "cpu")
        )
        print(
            f"| {label} | {ms['xla']:.2f} | {ms['cpu']:.2f} | "
            f"{ms['xla'] / ms['cpu']:.2f}x | {other} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
