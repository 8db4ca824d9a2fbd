"""Convolution, transposed-convolution and pooling layers with a choice of
implementation (``conv_impl``), for the U-Net (stride-1 'SAME' convolutions, also
used by the CNN classifiers; their strided and padded convolutions and strided
pooling are in :mod:`medjax.models.fast_strided`).

Both implementations compute the same function with the same parameters (same
names, shapes and initialisers as ``flax.linen.Conv`` / ``ConvTranspose``), so a
checkpoint trained with one runs with the other:

* ``xla``: ``lax.conv_general_dilated``, ``lax.conv_transpose`` and
  ``lax.reduce_window`` max pooling, as ``flax.linen`` does. Best on GPU.
* ``cpu``: formulations that XLA's CPU backend runs several times faster, found by
  profiling a U-Net training step (``experiments/benchmarks/README.md``):

  - stride-1 'SAME' convolutions with odd kernels and output channels a multiple
    of 16 (every 3x3(x3) convolution of a U-Net with widths 16, 32, ...), 2D and
    3D, run in medjax's C++ kernels (:mod:`medjax.cpu_kernels`, through XLA's FFI):
    forward, input gradient (the flipped kernel) and weight gradient. XLA's CPU
    backend runs 3D convolutions near 33 GFLOP/s and weight gradients near 80
    (after transposing both operands); the kernels run at 190-290. 2D forward
    passes narrower than 64 pixels stay with XLA (YNNPACK, :mod:`medjax.runtime`),
    which is faster there;
  - other convolutions, or all where the kernels cannot be built: XLA's, a
    ``k x k x k`` 3D one as one 2D convolution over the last two spatial axes of
    ``k`` shifted copies of the input stacked on channels (the first spatial axis
    folded into the batch), which XLA runs at its 2D rates;
  - a convolution with a ``1 x ... x 1`` kernel is a matrix product over channels;
  - the ``2 x 2`` stride-2 transposed convolution of the decoder (kernel equal to
    the stride) is one matrix product followed by a pixel shuffle; the gradient of
    XLA's transposed convolution took over a second per step at 256^2 x 32;
  - ``2 x 2`` stride-2 max pooling is a reshape and a max; XLA's
    ``select_and_scatter`` gradient is 5x slower. On ties inside a window the
    gradient is shared between the tied inputs instead of going to the first; in
    the U-Net ties occur only between zeros after a ReLU, whose gradient is zero
    either way.

``auto`` picks ``cpu`` when JAX's default backend is the CPU and ``xla`` otherwise.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from medjax import cpu_kernels

CONV_IMPLS = ("auto", "xla", "cpu")


def resolve_conv_impl(impl: str) -> str:
    """``xla`` or ``cpu`` for ``impl``; ``auto`` follows ``jax.default_backend()``."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl: expected one of {CONV_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return impl


def _spatial_letters(dims: int) -> str:
    return "HWD"[:dims]


def conv_xla(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Stride-1 'SAME' convolution of channels-last ``x [B, *spatial, C]`` with
    ``kernel [*k, C, O]``: the reference, ``lax.conv_general_dilated``."""
    sp = _spatial_letters(x.ndim - 2)
    return lax.conv_general_dilated(
        x, kernel, (1,) * (x.ndim - 2), "SAME",
        dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
    )


def _same_pad(k: int) -> tuple[int, int]:
    # XLA's 'SAME' for stride 1: k - 1 in all, the smaller half first
    return (k - 1) // 2, k - 1 - (k - 1) // 2


def _conv_lax(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """:func:`conv_xla` in the formulation XLA's CPU backend runs fastest: a 3D
    convolution as one 2D convolution of ``k`` H-shifted copies of the input
    stacked on channels, over (W, D) with H folded into the batch."""
    if x.ndim != 5:
        return conv_xla(x, kernel)
    *k, cin, cout = kernel.shape
    b, h = x.shape[:2]
    lo, hi = _same_pad(k[0])
    padded = jnp.pad(x, ((0, 0), (lo, hi), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([padded[:, t : t + h] for t in range(k[0])], axis=-1)
    # kernel [kh, kw, kd, C, O] -> [kw, kd, kh * C, O], tap-major like `stacked`
    folded = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(k[1], k[2], k[0] * cin, cout)
    y = conv_xla(stacked.reshape(b * h, *stacked.shape[2:]), folded)
    return y.reshape(b, h, *y.shape[1:])


# Below this width XLA's 2D convolution (YNNPACK) beats medjax's kernel, whose
# runs of 12 pixels along W then fill poorly (benchmarks README).
_KERNEL_MIN_WIDTH_2D = 64


def _conv_forward(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    if x.ndim == 4 and x.shape[2] < _KERNEL_MIN_WIDTH_2D:
        return conv_xla(x, kernel)
    return cpu_kernels.conv(x, kernel)


@jax.custom_vjp
def conv_kernels(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """:func:`conv_xla` computed by :mod:`medjax.cpu_kernels` (check
    :func:`medjax.cpu_kernels.supports` first): the convolution, the input
    gradient as the convolution of the output gradient with the flipped kernel,
    and the kernel gradient."""
    return _conv_forward(x, kernel)


def _conv_kernels_fwd(x, kernel):
    return _conv_forward(x, kernel), (x, kernel)


def _conv_kernels_bwd(residuals, g):
    x, kernel = residuals
    dims = x.ndim - 2
    if x.shape[-1] % cpu_kernels.LANES == 0:
        # odd kernels pad symmetrically, so the flipped kernel needs no shift
        flipped = jnp.swapaxes(kernel[(slice(None, None, -1),) * dims], -1, -2)
        input_grad = _conv_forward(g, flipped)
    else:  # e.g. one input channel: usually the image, whose gradient is unused
        input_grad = jax.vjp(lambda x: _conv_lax(x, kernel), x)[1](g)[0]
    return input_grad, cpu_kernels.conv_weight_grad(x, g, kernel.shape)


conv_kernels.defvjp(_conv_kernels_fwd, _conv_kernels_bwd)


def conv_cpu(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """The same convolution as :func:`conv_xla`, in the formulation XLA's CPU
    backend runs fastest (see the module docstring)."""
    *k, cin, cout = kernel.shape
    if all(size == 1 for size in k):
        return jnp.dot(x, kernel.reshape(cin, cout))
    if cpu_kernels.supports(x, kernel.shape):
        return conv_kernels(x, kernel)
    return _conv_lax(x, kernel)


class _KernelLayer(nn.Module):
    """A learned ``kernel [*kernel_size, C, features]`` (LeCun normal) and optional
    ``bias [features]`` (zeros), as flax.linen's convolutions create them, applied by
    :meth:`ops`' ``cpu`` or ``xla`` function."""

    features: int
    kernel_size: Sequence[int]
    use_bias: bool = True
    impl: str = "auto"

    def ops(self):
        """``{impl: fn(x, kernel)}``."""
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        y = self.ops()[resolve_conv_impl(self.impl)](x, kernel.astype(x.dtype))
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(x.dtype)
        return y


class Conv(_KernelLayer):
    """Stride-1 'SAME' convolution, parameter-compatible with ``nn.Conv``."""

    def ops(self):
        return {"cpu": conv_cpu, "xla": conv_xla}


def upconv_xla(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Transposed convolution with stride equal to the kernel size and 'VALID'
    padding, as ``nn.ConvTranspose`` computes it (``lax.conv_transpose``)."""
    dims = x.ndim - 2
    sp = _spatial_letters(dims)
    return lax.conv_transpose(
        x, kernel, kernel.shape[:dims], "VALID",
        dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
    )


def upconv_cpu(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """:func:`upconv_xla` as one matrix product and a pixel shuffle: output voxel
    ``s * p + i`` gets ``x[p] @ kernel[s - 1 - i]`` (windows do not overlap;
    ``lax.conv_transpose`` without ``transpose_kernel`` flips the kernel)."""
    dims = x.ndim - 2
    *k, cin, cout = kernel.shape
    kernel = kernel[(slice(None, None, -1),) * dims]
    # [C, *k, O] -> [C, prod(k) * O]
    y = jnp.dot(x, jnp.moveaxis(kernel, -2, 0).reshape(cin, -1))
    batch, spatial = x.shape[0], x.shape[1:-1]
    y = y.reshape(batch, *spatial, *k, cout)
    # interleave: (p_1, i_1, p_2, i_2, ...)
    order = [0]
    for d in range(dims):
        order += [1 + d, 1 + dims + d]
    y = jnp.transpose(y, (*order, 1 + 2 * dims))
    return y.reshape(batch, *(s * kk for s, kk in zip(spatial, k)), cout)


class UpConv(_KernelLayer):
    """Transposed convolution with ``strides == kernel_size`` and 'VALID' padding
    (the U-Net's 2x up-sampling), parameter-compatible with ``nn.ConvTranspose``."""

    def ops(self):
        return {"cpu": upconv_cpu, "xla": upconv_xla}


def max_pool(x: jnp.ndarray, window: int, impl: str = "auto") -> jnp.ndarray:
    """Max pooling with a ``window``-wide cube and stride ``window``, 'VALID'
    (trailing voxels that do not fill a window are dropped, as in
    ``nn.max_pool``)."""
    dims = x.ndim - 2
    if resolve_conv_impl(impl) != "cpu":
        return nn.max_pool(x, (window,) * dims, strides=(window,) * dims)
    spatial = [s // window for s in x.shape[1:-1]]
    x = x[(slice(None), *(slice(0, s * window) for s in spatial))]
    shape = [x.shape[0]]
    for s in spatial:
        shape += [s, window]
    x = x.reshape(*shape, x.shape[-1])
    return x.max(axis=tuple(2 + 2 * d for d in range(dims)))

