"""Process-wide JAX settings that make medjax fast to start and to run.

* :func:`compiler_options` are passed to the ``jax.jit`` of every training,
  evaluation and prediction step. On the CPU backend they route XLA's dot and
  convolution fusions to YNNPACK (XNNPACK's successor, bundled with jaxlib), which
  runs the U-Net's 2D convolutions and their gradients 2-3x faster than XLA's
  default Eigen kernels (``experiments/benchmarks/README.md``). Results agree within
  float32 rounding. ``MEDJAX_CPU_LIBRARY=xla`` turns it off.
* :func:`enable_compilation_cache` turns on JAX's persistent compilation cache,
  so a second run of the same configuration loads its compiled steps from disk
  instead of compiling them again.
* :func:`random_key` is the PRNG key every training, evaluation and
  initialisation draws from: JAX's threefry, drawing each array's bits flat and
  reshaping them. The bits are the same as ``jax.random.key``'s, bit for bit
  (threefry numbers an array's elements by their flat index), but XLA compiles
  the draw of a rank-4 or rank-5 array (a convolution kernel, a batch of noise
  images) several times faster: LLVM unrolls threefry's per-axis counters over
  small axes. A run initialises 2-4x faster (experiments/benchmarks/init_compile.py).
"""

import math
import os

import jax
import jax.extend.random as jax_prng

DEFAULT_CACHE_DIR = "~/.cache/medjax/jax"
CPU_LIBRARIES = ("ynn", "xla")


# YNNPACK fusion types. The list replaces XLA's default (reductions only); dots and
# convolutions with reductions measured fastest on full U-Net training and
# inference steps (experiments/benchmarks/README.md); adding elementwise fusions
# made the 2D training step 30 % slower.
YNN_FUSIONS = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """XLA options for ``jax.jit(..., compiler_options=...)`` on ``backend``
    (default: JAX's default backend); None where none apply."""
    backend = backend or jax.default_backend()
    library = os.environ.get("MEDJAX_CPU_LIBRARY", "ynn")
    if library not in CPU_LIBRARIES:
        raise ValueError(
            f"MEDJAX_CPU_LIBRARY: expected one of {CPU_LIBRARIES}, got {library!r}"
        )
    if backend != "cpu" or library == "xla":
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": YNN_FUSIONS}


def enable_compilation_cache(directory: str | None = DEFAULT_CACHE_DIR) -> str | None:
    """Store compiled XLA programs under ``directory`` (``~`` expanded) and reuse
    them in later processes; ``None`` or ``""`` leaves the cache off. Returns the
    directory in use."""
    if not directory:
        return None
    directory = os.path.abspath(os.path.expanduser(str(directory)))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    # cache every step that took a noticeable time to compile
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # Multi-device steps that use medjax.cpu_kernels hold custom-partitioning
    # calls whose Python callback address would otherwise enter the cache key and
    # change in every process. Their partitioning is a pure function of shapes and
    # shardings, which the key already covers.
    jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", True)
    return directory


def _flat_random_bits(key, bit_width: int, shape: tuple[int, ...]):
    """Threefry's bits for ``shape``, drawn for the flat array and reshaped."""
    flat = jax_prng.threefry_prng_impl.random_bits(key, bit_width, (math.prod(shape),))
    return flat.reshape(shape)


#: jax.random's threefry2x32 with :func:`_flat_random_bits`: the same keys (seed,
#: split and fold_in are threefry's) and the same numbers.
FLAT_THREEFRY = jax_prng.define_prng_impl(
    key_shape=jax_prng.threefry_prng_impl.key_shape,
    seed=jax_prng.threefry_prng_impl.seed,
    split=jax_prng.threefry_prng_impl.split,
    random_bits=_flat_random_bits,
    fold_in=jax_prng.threefry_prng_impl.fold_in,
    name="threefry2x32_flat",
    tag="fryflat",
)


def random_key(seed) -> jax.Array:
    """``jax.random.key(seed)`` with the numbers of JAX's default threefry, drawn
    through :data:`FLAT_THREEFRY` so that their programs compile fast."""
    return jax.random.key(seed, impl=FLAT_THREEFRY)
