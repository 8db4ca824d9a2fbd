"""Augmentation along time: one geometric transform for every frame of a
sequence, a cyclic phase shift and a temporal crop applied to every timed field
alike, and the settings that leave batches as they were."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.augment import Augmentation
from medjax.data import schema
from medjax.runtime import random_key

TIMED = (("image", schema.image(time=True)), ("mask", schema.label_map(time=True)))
STILL = (("image", schema.image()), ("mask", schema.label_map()))
GEOMETRY = {"rotation_probability": 1.0, "rotation_degrees": 40.0,
            "translation_probability": 1.0, "translation_fraction": 0.1}


@functools.cache
def jitted(augment, roles):
    return jax.jit(functools.partial(augment, schema=roles))


def cine(batch=2, frames=5, size=(11, 9), seed=0):
    """Distinct frames: frame t of example b holds the values b * 100 + t * 10 + noise,
    its mask the class t % 3 (and 0 in a corner) in every pixel."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (batch, frames, *size, 1)) + (
        100 * np.arange(batch)[:, None] + 10 * np.arange(frames)[None, :]
    )[:, :, None, None, None]
    mask = np.broadcast_to((np.arange(frames) % 3)[None, :, None, None],
                           (batch, frames, *size)).copy()
    mask[:, :, :3, :3] = 0
    return {"image": jnp.asarray(image, jnp.float32), "mask": jnp.asarray(mask, jnp.int32),
            "ejection_fraction": jnp.asarray([0.6, 0.3])[:batch]}


def test_every_frame_gets_the_transform_of_the_sequence():
    # Distinct frames: frame t of the augmented cine is frame t alone, augmented as
    # a still image with the same key. If each frame drew its own transform, the
    # frames would be moved differently and only one (if any) could match.
    batch = cine()
    # Every frame has the same minimum, the value that fills what moves in from
    # outside (one fill per sequence: its minimum).
    batch["image"] = batch["image"].at[:, :, 0, 0].set(0.0)
    augment = Augmentation(**GEOMETRY)
    out = jitted(augment, TIMED)(random_key(3), batch)
    for t in range(batch["image"].shape[1]):
        frame = {"image": batch["image"][:, t], "mask": batch["mask"][:, t]}
        alone = jitted(augment, STILL)(random_key(3), frame)
        np.testing.assert_allclose(out["image"][:, t], alone["image"], atol=1e-4)
        np.testing.assert_array_equal(out["mask"][:, t], alone["mask"])
    assert not np.allclose(out["image"], batch["image"], atol=1.0)  # moved
    # The two examples of the batch drew different transforms.
    assert not np.allclose(out["image"][0], out["image"][1] - 100, atol=1.0)


def test_a_phase_shift_rolls_every_timed_field_by_one_shift_per_example():
    batch = cine(batch=4, frames=6)
    out = jitted(Augmentation(phase_shift_probability=1.0), TIMED)(random_key(0), batch)
    shifts = []
    for b in range(4):
        # Which input frame went first: the frames' values are 10 t apart.
        shift = int(out["image"][b, 0].max() - 100 * b) // 10
        assert 1 <= shift <= 5
        order = (np.arange(6) + shift) % 6
        np.testing.assert_array_equal(out["image"][b], batch["image"][b][order])
        np.testing.assert_array_equal(out["mask"][b], batch["mask"][b][order])
        shifts.append(shift)
    assert len(set(shifts)) > 1  # drawn per example
    # The regression target passes through: a full cycle's EF does not depend on
    # the frame it starts at.
    np.testing.assert_array_equal(out["ejection_fraction"], batch["ejection_fraction"])


def test_the_ejection_fraction_of_a_shifted_cycle_is_the_same():
    # The cine phantoms' EF is 1 - (A_ES / A_ED) ** 1.5 of the extreme cavity areas
    # over the cycle: a roll of the frames keeps them.
    from medjax.data.datasets.phantoms.cine import CINE_LABELS, beating_heart, ejection_fraction

    case = beating_heart(np.random.default_rng(0), 32, 8)
    mask = jnp.asarray(case["mask"])[None]
    batch = {"image": jnp.asarray(case["image"], jnp.float32)[None, ..., None], "mask": mask}
    out = jitted(Augmentation(phase_shift_probability=1.0), TIMED)(random_key(1), batch)
    assert not np.array_equal(out["mask"], mask)
    areas = (np.asarray(out["mask"][0]) == CINE_LABELS["lv_cavity"]).sum((1, 2))
    assert ejection_fraction(areas) == pytest.approx(float(case["ejection_fraction"]), abs=1e-6)


def test_a_crop_keeps_consecutive_frames_of_every_timed_field_alike():
    batch = cine(batch=4, frames=7)
    augment = Augmentation(temporal_crop_frames=3, **GEOMETRY)
    out = jitted(augment, TIMED)(random_key(2), batch)
    assert out["image"].shape == (4, 3, 11, 9, 1) and out["mask"].shape == (4, 3, 11, 9)
    starts = []
    for b in range(4):
        frame_of = np.round((np.asarray(out["image"][b]).max((1, 2, 3)) - 100 * b) // 10)
        start = int(frame_of[0])
        np.testing.assert_array_equal(frame_of, [start, start + 1, start + 2])
        # The mask follows the image's frames (class t % 3 away from the corner).
        np.testing.assert_array_equal(out["mask"][b].max((1, 2)), (start + np.arange(3)) % 3)
        starts.append(start)
    assert 0 <= min(starts) and max(starts) <= 4 and len(set(starts)) > 1
    # Phase shift then crop: windows that wrap around the cycle.
    both = Augmentation(temporal_crop_frames=7, phase_shift_probability=1.0)
    wrapped = jitted(both, TIMED)(random_key(2), batch)
    assert wrapped["image"].shape == batch["image"].shape


def test_temporal_settings_are_checked_and_off_by_default():
    assert not Augmentation().temporal and not Augmentation().enabled
    assert Augmentation(temporal_crop_frames=4).enabled
    with pytest.raises(ValueError, match="augment.temporal_crop_frames=0"):
        Augmentation(temporal_crop_frames=0)
    with pytest.raises(ValueError, match="augment.phase_shift_probability=2"):
        Augmentation(phase_shift_probability=2)
    batch = cine(frames=3)
    with pytest.raises(ValueError, match="temporal_crop_frames=4: the sequences have 3 frames"):
        Augmentation(temporal_crop_frames=4)(random_key(0), batch, TIMED)
    # Without a time axis no frame moves (augment=cine on 2D slices), the rest
    # of the augmentation still applies.
    still = {"image": batch["image"][:, 0]}
    out = Augmentation(phase_shift_probability=1.0)(random_key(0), still, STILL[:1])
    np.testing.assert_array_equal(out["image"], still["image"])
