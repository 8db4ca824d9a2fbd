"""Hand-written CPU kernels, called from jitted JAX code through XLA's FFI.

``conv.cc`` holds a stride-1 'SAME' convolution of channels-last float32 arrays
in 2D and 3D, and its weight gradient. On a 2-core AVX-512 machine
(``experiments/benchmarks/README.md``) XLA's CPU backend runs the weight gradient
at 20-85 GFLOP/s (as a convolution with batch and channel axes swapped, behind two
layout transposes) and 3D convolutions near 33 GFLOP/s; these kernels read the
operands in place at 190-290 GFLOP/s.

The source ships with the package and is compiled on first use with the system's
C++ compiler (``$CXX`` or ``g++``, ``-O3 -march=native``) against the XLA FFI
headers that jaxlib ships, like ``torch.utils.cpp_extension.load``; the shared
library is cached under ``$MEDJAX_KERNEL_CACHE`` (default
``~/.cache/medjax/kernels``), keyed by the source, the compiler command, JAX's
version and the CPU, so later processes load it in milliseconds. Where no
compiler is found or the build fails, :func:`available` is False (with one
warning) and callers use XLA's convolutions.

The kernels are used only where they were built for AVX-512 (:func:`enabled`):
their tiles of accumulators fit the 32 zmm registers. Built for AVX2 (16 ymm
registers) the accumulators spill to the stack; on a 2-core AMD EPYC (znver3)
they ran at 2-4 GFLOP/s against XLA's 40-54 for the same convolutions, so
there XLA's convolutions are faster. ``MEDJAX_CPU_KERNELS`` chooses: unset or
``auto`` as above, ``1`` wherever they build (the tests, to check them on any
CPU), ``0`` never.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

SOURCE = Path(__file__).with_name("conv.cc")
DEFAULT_CACHE = "~/.cache/medjax/kernels"
#: The vector width below which the kernels are slower than XLA's convolutions.
FAST_VECTOR_BITS = 512
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")
# FFI target names -> symbols in the shared library
TARGETS = {"medjax_conv": "MedjaxConv", "medjax_conv_weight_grad": "MedjaxConvWeightGrad"}
LANES = 16  # output channels must be a multiple of this

_state: dict = {}


def _cpu_id() -> str:
    """The CPU model and feature flags (``-march=native`` builds for them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [line for line in text.splitlines()
                 if line.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> str:
    return os.environ.get("CXX", "g++")


def library_path() -> Path:
    """Where the shared library for this source, compiler and CPU lives."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), _compiler().encode(), " ".join(FLAGS).encode(),
                 jax.__version__.encode(), _cpu_id().encode()):
        key.update(part)
    cache = Path(os.path.expanduser(os.environ.get("MEDJAX_KERNEL_CACHE", DEFAULT_CACHE)))
    return cache / f"medjax_cpu_kernels-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compile :data:`SOURCE` into ``path`` (atomically: concurrent processes may
    build the same library)."""
    cxx = _compiler()
    if shutil.which(cxx) is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _setting() -> str:
    setting = os.environ.get("MEDJAX_CPU_KERNELS", "auto") or "auto"
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"MEDJAX_CPU_KERNELS: expected auto, 0 or 1, got {setting!r}")
    return setting


def available() -> bool:
    """True once the kernels are compiled (or found in the cache), loaded and
    registered with XLA for the CPU; False where that is impossible or
    ``MEDJAX_CPU_KERNELS=0``."""
    if _setting() == "0":
        return False
    if "ok" not in _state:
        try:
            path = library_path()
            if not path.exists():
                build(path)
            library = ctypes.cdll.LoadLibrary(str(path))
            for name, symbol in TARGETS.items():
                jax.ffi.register_ffi_target(
                    name, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
            _state["library"] = library
            _state["ok"] = True
        except Exception as error:  # noqa: BLE001: any failure means "use XLA's"
            warnings.warn(f"medjax: CPU kernels unavailable, using XLA's "
                          f"convolutions ({error})", RuntimeWarning, stacklevel=2)
            _state["ok"] = False
    return _state["ok"]


def vector_bits() -> int:
    """The vector width (bits) the loaded library was built for; 0 when the
    kernels are not available."""
    return int(_state["library"].medjax_vector_bits()) if available() else 0


def enabled() -> bool:
    """Whether callers use the kernels: available, and built for AVX-512
    (``MEDJAX_CPU_KERNELS=1``: wherever available)."""
    if not available():
        return False
    return _setting() == "1" or vector_bits() >= FAST_VECTOR_BITS


def supports(x: jnp.ndarray, kernel_shape: tuple[int, ...]) -> bool:
    """Whether :func:`conv` and :func:`conv_weight_grad` handle ``x`` with a kernel
    of ``kernel_shape``: 2D or 3D channels-last float32, odd kernel sizes, output
    channels a multiple of 16, the CPU backend, and the kernels :func:`enabled`."""
    *k, _, out = kernel_shape
    return (jax.default_backend() == "cpu" and x.ndim in (4, 5)
            and len(k) == x.ndim - 2 and x.dtype == jnp.float32
            and all(size % 2 == 1 for size in k) and int(np.prod(k[:-1])) <= 64
            and out % LANES == 0 and enabled())


def _conv_call(x, kernel):
    shape = jax.ShapeDtypeStruct((*x.shape[:-1], kernel.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call("medjax_conv", shape, vmap_method="sequential")(x, kernel)


def _weight_grad_call(x, g, kernel_shape):
    shape = jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32)
    return jax.ffi.ffi_call("medjax_conv_weight_grad", shape,
                            vmap_method="sequential")(x, g)


# Under a sharded jit, XLA would gather a batch-sharded input onto every device
# before a custom call. These rules let it run on each device's part of the batch
# instead (the weight gradient then summed over the batch axes); other axes stay
# whole.
def _batch_axes(arg_shapes):
    spec = arg_shapes[0].sharding.spec
    return spec[0] if len(spec) else None


def _spatial_factors(operands) -> tuple[list[str], list[str]]:
    """Shardy factor names of x's spatial axes and of the kernel's."""
    dims = len(operands[0].shape) - 2
    return [f"s{d}" for d in range(dims)], [f"k{d}" for d in range(dims)]


def _conv_rule(mesh, operands, results):
    # factors listed in order of first appearance, as Shardy requires
    sp, ks = _spatial_factors(operands)
    return (f"n {' '.join(sp)} c, {' '.join(ks)} c o -> n {' '.join(sp)} o",
            {"need_replication_factors": (*sp, "c", *ks, "o")})


def _conv_partition(mesh, arg_shapes, result_shape):
    batch = NamedSharding(mesh, P(_batch_axes(arg_shapes)))
    return mesh, _conv_call, batch, (batch, NamedSharding(mesh, P()))


_conv_sharded = custom_partitioning(_conv_call)
_conv_sharded.def_partition(partition=_conv_partition, sharding_rule=_conv_rule)


def _weight_grad_rule(kernel_shape, mesh, operands, results):
    sp, ks = _spatial_factors(operands)
    return (f"n {' '.join(sp)} c, n {' '.join(sp)} o -> {' '.join(ks)} c o",
            {"reduction_factors": ("n",),
             "need_replication_factors": (*sp, "c", "o", *ks)})


def _weight_grad_partition(kernel_shape, mesh, arg_shapes, result_shape):
    axes = _batch_axes(arg_shapes)
    batch = NamedSharding(mesh, P(axes))

    def local(x, g):
        grad = _weight_grad_call(x, g, kernel_shape)
        return grad if axes is None else jax.lax.psum(grad, axes)

    return mesh, local, NamedSharding(mesh, P()), (batch, batch)


_weight_grad_sharded = custom_partitioning(_weight_grad_call, static_argnums=(2,))
_weight_grad_sharded.def_partition(partition=_weight_grad_partition,
                                   sharding_rule=_weight_grad_rule)


def conv(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Stride-1 'SAME' convolution of ``x [N, (D,) H, W, C]`` with ``kernel
    [(kd,) kh, kw, C, O]`` (see :func:`supports`)."""
    return _conv_sharded(x, kernel)


def conv_weight_grad(x: jnp.ndarray, g: jnp.ndarray,
                     kernel_shape: tuple[int, ...]) -> jnp.ndarray:
    """``d kernel`` of ``y = conv(x, kernel)`` given ``g = dL/dy`` (see
    :func:`supports`)."""
    return _weight_grad_sharded(x, g, tuple(int(k) for k in kernel_shape))
