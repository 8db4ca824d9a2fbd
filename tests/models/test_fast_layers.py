"""The CPU fast paths of medjax.models.fast_layers against the reference XLA ops:
same outputs and gradients (float32 tolerance), compiled plainly and with the
YNNPACK options that medjax's training and inference steps use."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from medjax.models import fast_layers
from medjax.models.unet import UNet
from medjax.runtime import compiler_options, enable_compilation_cache, random_key

RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(autouse=True)
def _kernels_on(monkeypatch):
    # the C++ kernels wherever they build, not only where `auto` picks them
    # (AVX-512), so their values and gradients are checked on every CPU
    monkeypatch.setenv("MEDJAX_CPU_KERNELS", "1")
OPTIONS = {"plain": None, "ynn": compiler_options("cpu")}


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _reference_conv(x, kernel):
    dims = x.ndim - 2
    spec = "HWD"[:dims]
    return lax.conv_general_dilated(
        x, kernel, (1,) * dims, "SAME",
        dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"),
    )


def _value_and_grads(fn, options, *args):
    """fn(*args) and the gradients of sum(fn * cotangent) for every argument."""
    cotangent = _random(jax.eval_shape(fn, *args).shape, seed=7)

    def scalar(*a):
        return jnp.sum(fn(*a) * cotangent)

    run = jax.jit(lambda *a: (fn(*a), jax.grad(scalar, argnums=tuple(range(len(a))))(*a)),
                  compiler_options=options)
    return run(*args)


def _assert_same(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.shape == w.shape
        scale = float(jnp.max(jnp.abs(w))) + 1.0
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=ATOL * scale)


# every kernel the U-Net uses, at odd sizes (a 3D case with a flat first axis too)
CONV_CASES = [
    ((2, 7, 9, 3), (3, 3, 3, 5)),
    ((2, 7, 9, 3), (1, 1, 3, 5)),
    ((1, 5, 7, 9, 3), (3, 3, 3, 3, 4)),
    ((2, 3, 6, 5, 2), (3, 3, 3, 2, 3)),
    ((1, 5, 7, 9, 3), (1, 1, 1, 3, 4)),
    ((1, 5, 7, 9, 3), (1, 3, 3, 3, 4)),
    ((1, 1, 4, 3, 2), (3, 3, 3, 2, 2)),  # a single slice: both taps in padding
]
# cases medjax.cpu_kernels computes (output channels a multiple of 16): forward
# pixel runs with a partial tail, 16 + 32 output-channel tiles, input-channel
# remainders, anisotropic kernels, and input gradients by the kernel (C % 16 == 0)
# or by XLA
KERNEL_CASES = [
    ((2, 5, 67, 16), (3, 3, 16, 16)),  # 2D, wide enough for the kernel's forward
    ((2, 7, 9, 3), (3, 3, 3, 32)),  # 2D narrow: XLA's forward, the kernel's gradient
    ((2, 5, 66, 1), (3, 3, 1, 16)),  # one input channel (the image layer)
    ((1, 5, 7, 9, 16), (3, 3, 3, 16, 48)),
    ((1, 3, 6, 13, 5), (3, 1, 3, 5, 16)),
    ((1, 1, 4, 3, 16), (3, 3, 3, 16, 16)),
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("x_shape,k_shape", CONV_CASES + KERNEL_CASES, ids=str)
def test_conv_cpu_equals_conv_general_dilated(x_shape, k_shape, options):
    x, kernel = _random(x_shape, 1), _random(k_shape, 2)
    want = _value_and_grads(_reference_conv, None, x, kernel)
    got = _value_and_grads(fast_layers.conv_cpu, OPTIONS[options], x, kernel)
    _assert_same(got, want)


@pytest.mark.parametrize("options", ["plain", "ynn"])
@pytest.mark.parametrize("x_shape", [(2, 5, 7, 3), (1, 3, 5, 7, 3)], ids=str)
def test_upconv_cpu_equals_conv_transpose(x_shape, options):
    dims = len(x_shape) - 2
    module = nn.ConvTranspose(4, (2,) * dims, (2,) * dims, "VALID", use_bias=False)
    x = _random(x_shape, 3)
    kernel = _random((2,) * dims + (x_shape[-1], 4), 4)

    def reference(x, kernel):
        return module.apply({"params": {"kernel": kernel}}, x)

    want = _value_and_grads(reference, None, x, kernel)
    assert want[0].shape == (x_shape[0], *(2 * s for s in x_shape[1:-1]), 4)
    _assert_same(_value_and_grads(fast_layers.upconv_cpu, OPTIONS[options], x, kernel), want)
    _assert_same(_value_and_grads(fast_layers.upconv_xla, None, x, kernel), want)


@pytest.mark.parametrize("x_shape", [(2, 6, 8, 3), (2, 7, 9, 3), (1, 5, 6, 7, 2)], ids=str)
def test_max_pool_cpu_equals_reduce_window(x_shape):
    # distinct values: no ties, where the two gradients may split differently
    dims = len(x_shape) - 2
    x = jnp.asarray(np.random.default_rng(5).permutation(np.prod(x_shape)).reshape(x_shape),
                    jnp.float32)
    want = _value_and_grads(lambda x: nn.max_pool(x, (2,) * dims, (2,) * dims), None, x)
    got = _value_and_grads(lambda x: fast_layers.max_pool(x, 2, "cpu"), None, x)
    assert got[0].shape == (x_shape[0], *(s // 2 for s in x_shape[1:-1]), x_shape[-1])
    _assert_same(got, want)
    # each window's gradient goes to its maximum only
    assert float(got[1][0].astype(bool).sum()) == np.prod(got[0].shape)


def test_max_pool_ties_after_relu_give_the_same_input_gradient():
    # all-zero windows (dead ReLUs): the shares differ, the gradient through the ReLU not
    x = _random((2, 6, 6, 3), 6)

    def pooled(pool):
        return lambda x: pool(nn.relu(x))

    want = _value_and_grads(pooled(lambda y: nn.max_pool(y, (2, 2), (2, 2))), None, x)
    got = _value_and_grads(pooled(lambda y: fast_layers.max_pool(y, 2, "cpu")), None, x)
    _assert_same(got, want)


@pytest.mark.parametrize("spatial_dims,size,variant", [
    (2, (13, 10), {"norm": "instance", "residual": True, "deep_supervision": True}),
    (2, (9, 12), {"norm": "none", "upsample": "resize"}),
    (3, (7, 6, 5), {"norm": "batch"}),
    # widths of 16 and 32: every 3x3 conv through medjax.cpu_kernels
    (2, (6, 70), {"norm": "instance", "base_width": 16}),
    (3, (5, 6, 7), {"norm": "instance", "base_width": 16}),
], ids=str)
def test_unet_cpu_impl_equals_xla_impl(spatial_dims, size, variant):
    x = _random((2, *size, 1), 8)
    variant = {"base_width": 4, **variant}
    models = {impl: UNet(num_classes=3, spatial_dims=spatial_dims, depth=2,
                         conv_impl=impl, **variant) for impl in ("xla", "cpu")}
    # the same parameter tree and shapes; random values (drawn here: initialising
    # compiles a truncated normal per shape, a second each)
    key = random_key(0)
    shapes = {impl: jax.eval_shape(lambda k, m=m: m.init(k, x, train=False), key)
              for impl, m in models.items()}
    assert jax.tree.structure(shapes["cpu"]) == jax.tree.structure(shapes["xla"])
    assert jax.tree.leaves(shapes["cpu"]) == jax.tree.leaves(shapes["xla"])
    leaves, tree = jax.tree.flatten(shapes["cpu"])
    values = jax.tree.unflatten(tree, [0.3 * _random(s.shape, 20 + i) for i, s in enumerate(leaves)])
    variables = {"cpu": values, "xla": values}

    def outputs(impl, options):
        model, v = models[impl], variables[impl]

        def loss(params, x, cotangents):
            out, _ = model.apply({**v, "params": params}, x, train=True,
                                 mutable=["batch_stats"])
            out = out if isinstance(out, tuple) else (out,)
            return sum(jnp.sum(o * c) for o, c in zip(out, cotangents)), out

        shapes = jax.eval_shape(
            lambda p: model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"]),
            v["params"])[0]
        shapes = shapes if isinstance(shapes, tuple) else (shapes,)
        cotangents = [_random(o.shape, 9 + i) for i, o in enumerate(shapes)]
        run = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=options)
        return run(v["params"], x, cotangents)

    _assert_same(outputs("cpu", OPTIONS["ynn"]), outputs("xla", None))


def test_layers_initialise_like_flax():
    key, x = random_key(0), jnp.zeros((1, 4, 4, 3))
    for ours, flax_layer in (
        (fast_layers.Conv(5, (3, 3), impl="cpu"), nn.Conv(5, (3, 3))),
        (fast_layers.UpConv(5, (2, 2), impl="cpu"), nn.ConvTranspose(5, (2, 2), (2, 2))),
    ):
        got, want = ours.init(key, x), flax_layer.init(key, x)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)


def test_unet_widths_and_unknown_impl():
    model = UNet(num_classes=2, depth=2, widths=(8, 8, 16), conv_impl="cpu")
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 8, 8, 1)), train=False),
                            random_key(0))["params"]
    assert params["down_0"]["Conv_1"]["kernel"].shape == (3, 3, 8, 8)
    assert params["down_1"]["Conv_0"]["kernel"].shape == (3, 3, 8, 8)
    assert params["bottleneck"]["Conv_0"]["kernel"].shape == (3, 3, 8, 16)
    assert params["upconv_1"]["kernel"].shape == (2, 2, 16, 8)
    with pytest.raises(ValueError, match="widths"):
        jax.eval_shape(lambda: UNet(num_classes=2, depth=2, widths=(8, 16)).init(
            random_key(0), jnp.zeros((1, 8, 8, 1)), train=False))
    with pytest.raises(ValueError, match="conv_impl"):
        jax.eval_shape(lambda: UNet(num_classes=2, depth=1, conv_impl="cudnn").init(
            random_key(0), jnp.zeros((1, 8, 8, 1)), train=False))
    assert fast_layers.resolve_conv_impl("auto") == (
        "cpu" if jax.default_backend() == "cpu" else "xla")


def test_compiler_options(monkeypatch):
    assert compiler_options("gpu") is None
    assert compiler_options("cpu") == {
        "xla_cpu_experimental_ynn_fusion_type":
            "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    monkeypatch.setenv("MEDJAX_CPU_LIBRARY", "xla")
    assert compiler_options("cpu") is None
    monkeypatch.setenv("MEDJAX_CPU_LIBRARY", "mkl")
    with pytest.raises(ValueError, match="MEDJAX_CPU_LIBRARY"):
        compiler_options("cpu")


def test_compilation_cache_is_filled_and_reused(tmp_path):
    # a fresh process each time: JAX fixes its cache when it first compiles
    script = (
        "import jax, jax.numpy as jnp\n"
        "from medjax.runtime import enable_compilation_cache\n"
        f"enable_compilation_cache({str(tmp_path / 'cache')!r})\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
        "jax.config.update('jax_explain_cache_misses', True)\n"
        "print(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.arange(5.0)).sum())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def run():
        return subprocess.run([sys.executable, "-c", script], capture_output=True,
                              text=True, env=env, check=True)

    first = run()
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries, first.stderr
    second = run()
    assert second.stdout == first.stdout
    # the second process found the program in the cache and wrote nothing new
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries
    assert enable_compilation_cache(None) is None
