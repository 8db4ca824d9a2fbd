"""medjax.cpu_kernels: the C++ convolution kernels called through XLA's FFI.

Their numerical agreement with ``lax.conv_general_dilated`` (values and gradients,
2D and 3D, odd sizes, inside whole U-Nets) is tested in test_fast_layers.py; here:
that the kernels build and are the ones used, the sharded form, the checks in the
C++ handlers, and the fallback to XLA where they cannot be built.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from medjax import cpu_kernels
from medjax.models import fast_layers

needs_compiler = pytest.mark.skipif(
    shutil.which(cpu_kernels._compiler()) is None, reason="no C++ compiler")


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _reference(x, kernel):
    spec = "DHW"[3 - (x.ndim - 2):]
    return lax.conv_general_dilated(x, kernel, (1,) * (x.ndim - 2), "SAME",
                                    dimension_numbers=(f"N{spec}C", f"{spec}IO", f"N{spec}C"))


@pytest.fixture(autouse=True)
def _kernels_on(monkeypatch):
    # wherever they build (`auto` uses them only where built for AVX-512)
    monkeypatch.setenv("MEDJAX_CPU_KERNELS", "1")


@needs_compiler
def test_auto_uses_the_kernels_only_where_built_for_avx512(monkeypatch):
    assert cpu_kernels.available() and cpu_kernels.enabled()  # "1": wherever built
    with open("/proc/cpuinfo") as f:
        avx512 = " avx512f" in f.read()
    # -march=native builds for this CPU's vector registers
    assert (cpu_kernels.vector_bits() == 512) == avx512
    monkeypatch.delenv("MEDJAX_CPU_KERNELS")
    assert cpu_kernels.enabled() == avx512
    x, kernel = _random((2, 6, 70, 16)), _random((3, 3, 16, 32), 1)
    assert cpu_kernels.supports(x, kernel.shape) == avx512
    hlo = jax.jit(fast_layers.conv_cpu).lower(x, kernel).as_text()
    assert ("medjax_conv" in hlo) == avx512
    monkeypatch.setenv("MEDJAX_CPU_KERNELS", "0")
    assert not cpu_kernels.enabled()
    monkeypatch.setenv("MEDJAX_CPU_KERNELS", "yes")
    with pytest.raises(ValueError, match="MEDJAX_CPU_KERNELS: expected auto, 0 or 1"):
        cpu_kernels.enabled()


@needs_compiler
def test_kernels_build_load_and_are_used():
    assert cpu_kernels.available()
    assert cpu_kernels.library_path().exists()
    x, kernel = _random((2, 6, 70, 16)), _random((3, 3, 16, 32), 1)
    assert cpu_kernels.supports(x, kernel.shape)
    hlo = jax.jit(jax.grad(lambda k: fast_layers.conv_cpu(x, k).sum())).lower(kernel).as_text()
    assert "medjax_conv" in hlo and "medjax_conv_weight_grad" in hlo
    # not for output channels the vector tiles cannot cover, even kernels, float64
    assert not cpu_kernels.supports(x, (3, 3, 16, 24))
    assert not cpu_kernels.supports(x, (2, 2, 16, 32))
    assert not cpu_kernels.supports(x.astype(jnp.bfloat16), kernel.shape)


@needs_compiler
def test_kernel_values_directly():
    # the raw calls, hand-checkable: a 1-pixel-wide image and a delta kernel
    x = _random((1, 4, 1, 2), 3)
    kernel = jnp.zeros((3, 3, 2, 16)).at[0, 1, 1, 5].set(2.0)  # y[h, o=5] = 2 x[h-1, c=1]
    y = cpu_kernels.conv(x, kernel)
    want = jnp.zeros((1, 4, 1, 16)).at[0, 1:, 0, 5].set(2.0 * x[0, :3, 0, 1])
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-6, atol=1e-6)
    g = jnp.ones((1, 4, 1, 16))
    grad = cpu_kernels.conv_weight_grad(x, g, (3, 3, 2, 16))
    # tap (i, j) sums x over the rows it reaches: all but the last for i = 0
    np.testing.assert_allclose(np.asarray(grad[0, 1, :, 0]), np.asarray(x[0, :3, 0].sum(0)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad[1, 1, :, 3]), np.asarray(x[0, :, 0].sum(0)),
                               rtol=1e-6)
    assert float(jnp.abs(grad[:, 0]).max()) == 0.0  # left and right taps: padding only
    assert float(jnp.abs(grad[:, 2]).max()) == 0.0


@needs_compiler
def test_handlers_reject_bad_shapes():
    x = _random((1, 4, 4, 2))
    with pytest.raises(Exception, match="multiple of 16"):
        jax.block_until_ready(cpu_kernels._conv_call(x, jnp.zeros((3, 3, 2, 8))))
    with pytest.raises(Exception, match="odd"):
        jax.block_until_ready(cpu_kernels._conv_call(x, jnp.zeros((2, 2, 2, 16))))
    with pytest.raises(Exception, match="input channels"):
        jax.block_until_ready(cpu_kernels._conv_call(x, jnp.zeros((3, 3, 3, 16))))
    with pytest.raises(Exception, match="g must be"):  # g from another image size
        jax.block_until_ready(cpu_kernels._weight_grad_call(
            x, jnp.zeros((1, 4, 5, 16)), (3, 3, 2, 16)))


@needs_compiler
@pytest.mark.parametrize("x_shape,k_shape", [
    ((8, 5, 70, 16), (3, 3, 16, 32)),
    ((4, 3, 5, 6, 16), (3, 3, 3, 16, 16)),
], ids=str)
def test_batch_sharded_runs_per_device_and_matches(x_shape, k_shape):
    devices = jax.devices()
    assert len(devices) == 4  # conftest: four host devices
    mesh = jax.make_mesh((4,), ("data",))
    x, kernel = _random(x_shape, 4), 0.1 * _random(k_shape, 5)
    cotangent = _random(x_shape[:-1] + k_shape[-1:], 6)

    def loss(kernel, x, conv):
        return jnp.sum(conv(x, kernel) * cotangent)

    want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(
        kernel, x, _reference)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2,
                   in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))))
    compiled = step.lower(kernel, x, fast_layers.conv_cpu).compile()
    text = compiled.as_text()
    # each device convolves its quarter of the batch; the kernel gradient is summed
    assert "all-gather" not in text and "all-reduce" in text
    assert "medjax_conv_weight_grad" in text
    got = compiled(kernel, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = float(jnp.abs(w).max()) + 1.0
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4 * scale)


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=300)


FALLBACK = """
    import warnings
    import jax, jax.numpy as jnp, numpy as np
    from jax import lax
    from medjax import cpu_kernels
    from medjax.models import fast_layers
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 70, 16)), jnp.float32)
    k = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 16, 16)), jnp.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("available", cpu_kernels.available())
        print("supports", cpu_kernels.supports(x, k.shape))
    print("warned", any("CPU kernels unavailable" in str(w.message) for w in caught))
    hlo = jax.jit(fast_layers.conv_cpu).lower(x, k).as_text()
    print("uses kernels", "medjax_conv" in hlo)
    want = lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
    print("equal", bool(jnp.allclose(fast_layers.conv_cpu(x, k), want, atol=1e-4)))
"""


def test_turned_off_by_environment():
    out = _run(FALLBACK, MEDJAX_CPU_KERNELS="0").stdout
    assert "available False" in out and "uses kernels False" in out and "equal True" in out
    assert "warned False" in out  # turned off on purpose: no warning


def test_without_a_compiler_falls_back_to_xla_with_a_warning(tmp_path):
    out = _run(FALLBACK, CXX=str(tmp_path / "no-such-compiler"),
               MEDJAX_KERNEL_CACHE=str(tmp_path / "cache"))
    assert "available False" in out.stdout, out.stderr[-2000:]
    assert "warned True" in out.stdout and "uses kernels False" in out.stdout
    assert "equal True" in out.stdout


@needs_compiler
def test_build_is_cached_between_processes(tmp_path):
    cache = str(tmp_path / "cache")
    code = """
        import time
        from medjax import cpu_kernels
        t = time.perf_counter(); ok = cpu_kernels.available()
        print(ok, cpu_kernels.library_path(), time.perf_counter() - t)
    """
    first = _run(code, MEDJAX_KERNEL_CACHE=cache).stdout.split()
    assert first[0] == "True" and first[1].startswith(cache)
    built = os.stat(first[1]).st_mtime_ns
    second = _run(code, MEDJAX_KERNEL_CACHE=cache).stdout.split()
    assert second[:2] == first[:2]
    assert os.stat(first[1]).st_mtime_ns == built  # loaded, not rebuilt
    assert float(second[2]) < float(first[2])
    assert len(os.listdir(cache)) == 1  # no temporary files left behind
