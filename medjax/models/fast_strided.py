"""Strided and explicitly padded convolutions and strided max pooling with a choice
of implementation (``conv_impl``), for the CNN classifiers and ResNets
(:mod:`medjax.models.cnn`); the stride-1 'SAME' ones are
:mod:`medjax.models.fast_layers`'.

Both implementations compute the same function with the same parameters (those of
``flax.linen.Conv``: ``kernel [*k, C, O]``, LeCun normal; ``bias [O]``, zeros):

* ``xla``: exactly what ``nn.Conv`` (``lax.conv_general_dilated``) and
  ``nn.max_pool`` (``lax.reduce_window``) compute, so ``conv_impl=xla``
  reproduces the models' numbers bit for bit.
* ``cpu``: formulations that XLA's CPU backend runs faster, each kept only where
  ``experiments/benchmarks/cnn_fast_path.py`` measured it faster
  (``experiments/benchmarks/README.md``):

  - stride-1 'SAME' convolutions: :func:`medjax.models.fast_layers.conv_cpu`
    (medjax's C++ kernels where they apply);
  - ``1 x ... x 1`` strided convolutions (a ResNet's projection shortcut): the
    subsampled input times the kernel, one matrix product;
  - 3D ``k^3`` strided convolutions (downsampling blocks, the 7^3 stem): the
    ``k`` H-shifted, H-strided copies of the input stacked on channels and one XLA
    2D strided convolution over (W, D) with H folded into the batch, which XLA
    runs at its 2D rates (its 3D convolutions run near 30 GFLOP/s);
  - 2D strided convolutions stay with XLA (YNNPACK), the fastest measured;
  - strided max pooling: a separable max of strided slices of the (-inf padded)
    input, axis by axis; XLA's ``select_and_scatter`` gradient is slow on the
    CPU. On ties inside a window the gradient is shared between the tied inputs
    instead of going to the first (after a ReLU ties are zeros, whose gradient
    is zero either way).
"""

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from medjax.models.fast_layers import _KernelLayer, conv_cpu, resolve_conv_impl

Padding = str | Sequence[tuple[int, int]]


def _letters(dims: int) -> str:
    return "HWD"[:dims]


def explicit_pads(
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    padding: Padding,
) -> list[tuple[int, int]]:
    """``(low, high)`` zero padding per spatial axis, as XLA resolves ``padding``
    ('SAME', 'VALID' or explicit pairs)."""
    if isinstance(padding, str):
        return [
            tuple(p) for p in lax.padtype_to_pads(spatial, window, strides, padding)
        ]
    return [(int(lo), int(hi)) for lo, hi in padding]


def conv_general_xla(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int], padding: Padding
) -> jnp.ndarray:
    """Convolution of channels-last ``x [B, *spatial, C]`` with ``kernel [*k, C,
    O]``: the reference, as ``nn.Conv`` calls ``lax.conv_general_dilated``."""
    sp = _letters(x.ndim - 2)
    if not isinstance(padding, str):
        padding = [tuple(p) for p in padding]
    return lax.conv_general_dilated(
        x,
        kernel,
        tuple(strides),
        padding,
        dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
    )


def _strided_slice(x: jnp.ndarray, axis: int, start: int, size: int, stride: int):
    """``size`` elements of ``x`` along ``axis`` from ``start``, every ``stride``."""
    return lax.slice_in_dim(x, start, start + stride * (size - 1) + 1, stride, axis)


def _out_size(n: int, k: int, s: int, pad: tuple[int, int]) -> int:
    return (n + pad[0] + pad[1] - k) // s + 1


def _conv3d_folded(x, kernel, strides, pads):
    """A 3D convolution as ``k`` H-shifted copies (every ``strides[0]``-th row)
    stacked on channels and one 2D convolution over (W, D), H in the batch."""
    kh, kw, kd, cin, cout = kernel.shape
    b, h = x.shape[:2]
    ho = _out_size(h, kh, strides[0], pads[0])
    padded = jnp.pad(x, ((0, 0), pads[0], (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate(
        [_strided_slice(padded, 1, t, ho, strides[0]) for t in range(kh)], axis=-1
    )
    # kernel [kh, kw, kd, C, O] -> [kw, kd, kh * C, O], tap-major like `stacked`
    folded = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kw, kd, kh * cin, cout)
    flat = stacked.reshape(b * ho, *stacked.shape[2:])
    y = conv_general_xla(flat, folded, strides[1:], pads[1:])
    return y.reshape(b, ho, *y.shape[1:])


def conv_general_cpu(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: Sequence[int], padding: Padding
) -> jnp.ndarray:
    """The same convolution as :func:`conv_general_xla`, in the formulation XLA's
    CPU backend runs fastest (see the module docstring)."""
    dims = x.ndim - 2
    *k, cin, cout = kernel.shape
    strides = tuple(strides)
    pads = explicit_pads(x.shape[1:-1], k, strides, padding)
    same = explicit_pads(x.shape[1:-1], k, (1,) * dims, "SAME")
    if strides == (1,) * dims and pads == same and all(n % 2 for n in k):
        return conv_cpu(x, kernel)
    if all(n == 1 for n in k):
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        for axis, s in enumerate(strides):
            size = _out_size(x.shape[1 + axis], 1, s, (0, 0))
            x = _strided_slice(x, 1 + axis, 0, size, s)
        return jnp.dot(x, kernel.reshape(cin, cout))
    if dims == 3:
        return _conv3d_folded(x, kernel, strides, pads)
    return conv_general_xla(x, kernel, strides, pads)


class StridedConv(_KernelLayer):
    """Convolution with ``strides`` and ``padding`` ('SAME', 'VALID' or explicit
    ``(low, high)`` pairs), parameter-compatible with ``nn.Conv`` (give it the
    name ``nn.Conv`` would have had, e.g. ``Conv_0``)."""

    strides: Sequence[int] | None = None
    padding: Padding = "SAME"

    def ops(self):
        strides = self.strides or (1,) * len(self.kernel_size)
        args = {"strides": tuple(strides), "padding": self.padding}
        return {
            "cpu": partial(conv_general_cpu, **args),
            "xla": partial(conv_general_xla, **args),
        }


def max_pool_xla(
    x: jnp.ndarray, window: Sequence[int], strides: Sequence[int], padding: Padding
) -> jnp.ndarray:
    """Max pooling as ``nn.max_pool`` computes it (``lax.reduce_window``; the
    padding holds -inf)."""
    if not isinstance(padding, str):
        padding = [tuple(p) for p in padding]
    return nn.max_pool(x, tuple(window), tuple(strides), padding)


def max_pool_cpu(
    x: jnp.ndarray, window: Sequence[int], strides: Sequence[int], padding: Padding
) -> jnp.ndarray:
    """:func:`max_pool_xla` as a separable maximum of strided slices, axis by
    axis (a box's maximum is the maximum over each axis in turn)."""
    pads = explicit_pads(x.shape[1:-1], window, strides, padding)
    for axis, (w, s, pad) in enumerate(zip(window, strides, pads)):
        axis += 1
        size = _out_size(x.shape[axis], w, s, pad)
        widths = [(0, 0)] * x.ndim
        widths[axis] = pad
        padded = jnp.pad(x, widths, constant_values=-jnp.inf)
        taps = [_strided_slice(padded, axis, t, size, s) for t in range(w)]
        x = taps[0]
        for tap in taps[1:]:
            x = jnp.maximum(x, tap)
    return x


def max_pool(
    x: jnp.ndarray,
    window: Sequence[int],
    strides: Sequence[int],
    padding: Padding = "VALID",
    impl: str = "auto",
) -> jnp.ndarray:
    """Max pooling of ``x [B, *spatial, C]`` by ``conv_impl`` ``impl``."""
    pool = max_pool_cpu if resolve_conv_impl(impl) == "cpu" else max_pool_xla
    return pool(x, tuple(window), tuple(strides), padding)
