"""medjax's U-Net against MONAI's BasicUNet on this machine's CPU.

Both networks have BasicUNet's channel plan (32, 32, 64, 128, 256), instance
normalisation, 2x2 max pooling down and 2x2 stride-2 transposed convolutions up,
two classes, cross-entropy and Adam. Each shape is timed alternately (medjax,
MONAI, medjax plain XLA, ...) after warm-up, in one process, so that both see the
same machine state. FLOPs come from XLA's cost analysis of medjax's step written
with lax convolutions (conv_impl=xla); both networks do the same arithmetic, so
MONAI's GFLOP/s use the same count.

    pip install -e ".[bench]"
    python experiments/benchmarks/unet_vs_monai.py            # everything, ~10 min
    python experiments/benchmarks/unet_vs_monai.py --cases 2d_train --reps 3

``--startup`` also times a fresh process up to the end of its first 2D training
step: medjax with empty caches (cold: XLA's compilation cache and the build of
medjax's C++ kernels), medjax again with the caches the cold run filled (warm),
and MONAI.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np

CHANNELS = (32, 32, 64, 128, 256)
CASES = {  # name: (spatial dims, batch, size, train)
    "2d_train": (2, 8, 256, True),
    "2d_infer": (2, 1, 512, False),
    "3d_train": (3, 2, 64, True),
    "3d_infer": (3, 1, 64, False),
}


def medjax_runner(case: str, impl: str):
    """(run, GFLOP function, parameters) for medjax's U-Net; ``impl`` 'cpu' is medjax's
    default on the CPU (fast layers and YNNPACK), 'xla' plain lax convolutions
    compiled with XLA's defaults (medjax before this benchmark)."""
    import jax
    import jax.numpy as jnp
    import optax

    from medjax.models.unet import UNet
    from medjax.runtime import compiler_options

    dims, batch, size, train = CASES[case]
    model, reference = (
        UNet(num_classes=2, spatial_dims=dims, depth=len(CHANNELS) - 1,
             widths=CHANNELS, norm="instance", conv_impl=i) for i in (impl, "xla"))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch,) + (size,) * dims + (1,)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, (batch,) + (size,) * dims))
    options = compiler_options() if impl == "cpu" else None
    init = jax.jit(partial(model.init, train=False), compiler_options=options)
    params = init(jax.random.key(0), x[:1])["params"]
    tx = optax.adam(1e-3)

    def loss(params, x, y, model=model):
        logits = model.apply({"params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, opt_state, x, y, model=model):
        value, grads = jax.value_and_grad(partial(loss, model=model))(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def infer(params, x, model=model):
        return model.apply({"params": params}, x, train=False)

    if train:
        opt_state = jax.jit(tx.init)(params)
        compiled = jax.jit(step, compiler_options=options).lower(
            params, opt_state, x, y).compile()
        state = [params, opt_state]

        def run():
            state[0], state[1], value = compiled(state[0], state[1], x, y)
            jax.block_until_ready(value)
    else:
        compiled = jax.jit(infer, compiler_options=options).lower(params, x).compile()

        def run():
            jax.block_until_ready(compiled(params, x))

    def gflop() -> float:
        # of the same step written with lax convolutions: XLA's cost analysis does
        # not see inside medjax.cpu_kernels' custom calls
        args = (params, opt_state, x, y) if train else (params, x)
        fn = partial(step if train else infer, model=reference)
        cost = jax.jit(fn).lower(*args).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["flops"] / 1e9

    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return run, gflop, count


def monai_runner(case: str):
    """(run, parameters) for MONAI's BasicUNet with the same plan."""
    import torch
    from monai.networks.nets import BasicUNet

    dims, batch, size, train = CASES[case]
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2,
                    features=CHANNELS + (CHANNELS[0],))
    x = torch.randn((batch, 1) + (size,) * dims)
    y = torch.randint(0, 2, (batch,) + (size,) * dims)
    count = sum(p.numel() for p in net.parameters())
    if train:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)

        def run():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
    else:
        net.eval()

        def run():
            with torch.inference_mode():
                net(x)

    return run, count


def matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of an n x n float32 matrix product in JAX (XLA's default and
    YNNPACK) and PyTorch: the machine's practical peak."""
    import jax
    import jax.numpy as jnp
    import torch

    from medjax.runtime import compiler_options

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    flop = 2 * n**3 / 1e9
    out = {}
    for name, options in (("jax", None), ("jax+ynn", compiler_options("cpu"))):
        f = jax.jit(lambda m: m @ m, compiler_options=options)
        m = jnp.asarray(a)
        out[name] = flop / _best(lambda: jax.block_until_ready(f(m)), reps)
    t = torch.from_numpy(a)
    out["torch"] = flop / _best(lambda: t @ t, reps)
    return out


def _best(run, reps: int) -> float:
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def time_alternately(runners: dict, warmup: int, reps: int, pause: float = 1.0
                      ) -> dict[str, list[float]]:
    """Seconds per call of each runner, calling them in turn ``warmup + reps``
    times and keeping the last ``reps``. Each call waits ``pause`` seconds first:
    the previous library's worker threads spin for a while after its call ends
    (OpenMP, Eigen) and would otherwise slow the next contender down."""
    times = {name: [] for name in runners}
    for rep in range(warmup + reps):
        for name, run in runners.items():
            time.sleep(pause)
            start = time.perf_counter()
            run()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def first_step(which: str) -> None:
    """Child process: build the 2D training case and run one step, printing how
    long the imports, the set-up (initialisation and compilation or cache load)
    and the step took."""
    start = time.perf_counter()
    if which == "monai":
        import monai.networks.nets  # noqa: F401
    else:
        import medjax.models.unet  # noqa: F401
        from medjax.runtime import enable_compilation_cache

        enable_compilation_cache(os.environ["MEDJAX_BENCH_CACHE"])
    imported = time.perf_counter()
    if which == "monai":
        run, _ = monai_runner("2d_train")
    else:
        run, _, _ = medjax_runner("2d_train", "cpu")
    built = time.perf_counter()
    run()
    done = time.perf_counter()
    print(f"    imports {imported - start:.1f} s, set-up {built - imported:.1f} s, "
          f"first step {done - built:.1f} s", flush=True)


def startup() -> dict[str, float]:
    """Wall seconds from process start to the end of the first 2D training step."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        # cold: nothing compiled, neither the XLA programs nor medjax's C++ kernels
        env = dict(os.environ, MEDJAX_BENCH_CACHE=cache,
                   MEDJAX_KERNEL_CACHE=os.path.join(cache, "kernels"))
        for label, which in (("medjax cold cache", "medjax"),
                             ("medjax warm cache", "medjax"), ("MONAI", "monai")):
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--first-step", which],
                           check=True, env=env)
            out[label] = time.perf_counter() - start
            print(f"  first step, {label}: {out[label]:.1f} s", flush=True)
    return out


def _summary(times: list[float]) -> str:
    return f"{np.median(times):7.3f} s ({min(times):.3f}-{max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                        default=True, help="also time plain XLA (conv_impl=xla)")
    parser.add_argument("--startup", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--first-step", choices=("medjax", "monai"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_step:
        first_step(args.first_step)
        return

    import jax
    import torch

    print(f"{os.cpu_count()} CPUs; jax {jax.__version__} on {jax.default_backend()}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)
    peak = matmul_peak()
    print("matmul peak (2048^2 float32, GFLOP/s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()), flush=True)

    rows = []
    for case in args.cases.split(","):
        run, gflop, count = medjax_runner(case, "cpu")
        gflop = gflop()
        runners = {"medjax": run}
        monai_run, monai_count = monai_runner(case)
        runners["MONAI"] = monai_run
        if args.baseline:
            runners["medjax plain XLA"] = medjax_runner(case, "xla")[0]
        print(f"{case}: {gflop:.1f} GFLOP per call; parameters medjax {count:,}, "
              f"MONAI {monai_count:,}", flush=True)
        times = time_alternately(runners, args.warmup, args.reps)
        monai = np.median(times["MONAI"])
        for name, ts in times.items():
            speed = monai / np.median(ts)
            print(f"  {name:17s} {_summary(ts)}  {gflop / np.median(ts):5.0f} GFLOP/s  "
                  f"speed vs MONAI {speed:.2f}x", flush=True)
        rows.append((case, gflop, {k: np.median(v) for k, v in times.items()}))

    print("\n| case | GFLOP | medjax s | MONAI s | medjax speed vs MONAI |"
          + (" plain XLA s | plain XLA vs MONAI |" if args.baseline else ""))
    print("|---|---|---|---|---|" + ("---|---|" if args.baseline else ""))
    for case, gflop, med in rows:
        line = (f"| {case} | {gflop:.0f} | {med['medjax']:.3f} | {med['MONAI']:.3f} | "
                f"**{med['MONAI'] / med['medjax']:.2f}x** |")
        if args.baseline:
            base = med["medjax plain XLA"]
            line += f" {base:.3f} | {med['MONAI'] / base:.2f}x |"
        print(line)
    if args.startup:
        print("time to the end of the first 2D training step in a new process:")
        startup()


if __name__ == "__main__":
    main()
