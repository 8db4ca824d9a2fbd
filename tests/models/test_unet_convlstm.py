import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.sequence.unet_convlstm import (
    UNetConvLSTM,
    unet_convlstm_small,
    unet_convlstm_tiny,
)
from medjax.models.unet import unet_tiny
from medjax.runtime import random_key
from tests.models.test_sequence import random_variables

CLASSES = 3
# Odd in-plane sizes (padded to multiples of 4 inside), 5 slices; two volumes:
# a random one and the same with slice 0 (batch item 1) replaced.
VOLUME = np.random.default_rng(0).normal(size=(1, 10, 7, 5, 1)).astype(np.float32)
PERTURBED = VOLUME.copy()
PERTURBED[..., 0, :] = 3.0
PAIR = jnp.asarray(np.concatenate([VOLUME, PERTURBED]))


@functools.lru_cache
def outputs():
    """Logits of PAIR with the recurrence on and off (the same U-Net weights), the
    2D U-Net applied to each slice of it alone, and the variables."""
    model = unet_convlstm_tiny(num_classes=CLASSES)
    variables = random_variables(model, PAIR, scale=0.3)  # no init to compile
    without = {
        "params": {
            name: value
            for name, value in variables["params"].items()
            if not name.startswith("slices")
        },
        "batch_stats": variables["batch_stats"],
    }

    def apply(module, module_variables):
        return jax.jit(functools.partial(module.apply, train=False))(
            module_variables, PAIR
        )

    on = apply(model, variables)
    off = apply(model.clone(recurrence=False), without)
    unet = jax.jit(
        functools.partial(
            unet_tiny(num_classes=CLASSES, spatial_dims=2).apply, train=False
        )
    )
    slices = [unet(without, PAIR[:, :, :, z]) for z in range(PAIR.shape[3])]
    return on, off, jnp.stack(slices, axis=3), variables, without


def test_volume_in_voxel_logits_out():
    on, off, _, variables, without = outputs()
    assert on.shape == off.shape == PAIR.shape[:4] + (CLASSES,)
    # The recurrence adds only the ConvLSTM (both directions) and its projection.
    assert set(variables["params"]) - set(without["params"]) == {
        "slices",
        "slices_projection",
    }
    assert set(variables["params"]["slices"]) == {"forward_rnn", "backward_rnn"}


def test_without_recurrence_it_is_the_2d_unet_on_each_slice_alone():
    _, off, slice_by_slice, *_ = outputs()
    # float32 sums in another order (slices folded into the batch, or not)
    np.testing.assert_allclose(off, slice_by_slice, rtol=1e-4, atol=1e-4)


def test_the_convlstm_carries_information_across_slices_both_ways():
    on, off, *_ = outputs()
    # Slice 0 was changed: without recurrence slices 1..4 see nothing of it ...
    np.testing.assert_array_equal(off[1, :, :, 1:], off[0, :, :, 1:])
    assert float(jnp.max(jnp.abs(off[1, :, :, 0] - off[0, :, :, 0]))) > 1e-3
    # ... with it, the last slice (four steps along the forward direction) does.
    assert float(jnp.max(jnp.abs(on[1, :, :, -1] - on[0, :, :, -1]))) > 1e-4


def test_presets_and_bad_inputs():
    shapes = jax.eval_shape(
        lambda: unet_convlstm_small(num_classes=2).init(
            random_key(0), jnp.zeros((1, 16, 16, 4, 1)), train=False
        )
    )
    hidden = shapes["params"]["slices"]["forward_rnn"]["cell"]
    assert hidden["hh"]["kernel"].shape == (3, 3, 32, 4 * 32)  # 32 channels, 4 gates
    with pytest.raises(ValueError, match=r"volumes \[batch, x, y, slices, channels\]"):
        UNetConvLSTM(num_classes=2).init(
            random_key(0), jnp.zeros((1, 8, 8, 1)), train=False
        )
