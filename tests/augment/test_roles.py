"""Augmentation by field roles: vector fields rotate as vectors, boxes move through
their corners, sequences share one transform across frames, instance maps move
like label maps."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.augment import Augmentation, geometry
from medjax.data import schema
from medjax.ops import displacement as dense_fields
from medjax.ops import spatial
from medjax.runtime import random_key

IMAGE = (("image", schema.image()),)
AFFINE = {
    "rotation_probability": 1.0,
    "rotation_degrees": 30.0,
    "zoom_probability": 1.0,
    "zoom_range": (0.9, 1.1),
    "shear_probability": 1.0,
    "shear_max": 0.08,
    "translation_probability": 1.0,
    "translation_fraction": 0.05,
}
ELASTIC = {"elastic_probability": 1.0, "elastic_sigma": 4.0, "elastic_magnitude": 0.8}


@functools.cache
def jitted(augment, roles):
    return jax.jit(functools.partial(augment, schema=roles))


def fixed_transform(matrix, shape):
    """A Transform of one known affine (no elastic), as ``geometry.draw`` builds."""
    grid = spatial.identity_grid(shape).reshape(-1, len(shape))
    coords = spatial.transform_points(jnp.linalg.inv(matrix), grid)
    return geometry.Transform(
        matrix, None, coords.reshape(*shape, len(shape)), jnp.asarray(True)
    )


def test_a_quarter_turn_turns_a_constant_field_by_a_quarter():
    shape = (9, 9)
    matrix = spatial.affine_matrix(
        2, rotation=math.pi / 2, center=spatial.image_center(shape)
    )
    field = jnp.broadcast_to(jnp.asarray([1.0, 0.0]), (*shape, 2))
    moved = geometry.move_vector_field(fixed_transform(matrix, shape), field)
    # R = [[0, -1], [1, 0]] takes (1, 0) to (0, 1). A square grid turned by a
    # quarter about its centre lands on itself; the border may read just outside.
    np.testing.assert_allclose(
        moved[1:-1, 1:-1], np.broadcast_to([0.0, 1.0], (7, 7, 2)), atol=1e-5
    )


def test_a_flip_reverses_the_flipped_component():
    shape = (7, 6)
    field = jnp.broadcast_to(jnp.asarray([1.0, 0.5]), (1, *shape, 2))
    batch = {"image": jnp.zeros((1, *shape, 1)), "flow": field}
    roles = IMAGE + (("flow", schema.VECTOR),)
    flip = Augmentation(flip_probability=1.0, flip_axes=(0,))
    out = flip(random_key(0), batch, roles)
    np.testing.assert_allclose(out["flow"], np.broadcast_to([-1.0, 0.5], field.shape))


@pytest.mark.parametrize("elastic", [False, True], ids=["affine", "affine+elastic"])
def test_a_moved_displacement_still_warps_the_moved_image_onto_the_moved_target(
    elastic,
):
    # fixed(x) = moving(x + u(x)). Moving both images and u by one transform
    # must keep that: warp(moving', u') = fixed' wherever it is defined.
    shape = (33, 31)
    grid = np.asarray(spatial.identity_grid(shape))
    # A smooth pattern with gradients everywhere, so a wrong field shows.
    wave = 2 * np.pi * grid / 20.0
    moving = (np.sin(wave[..., 0]) * np.cos(wave[..., 1] + 0.3))[..., None]
    moving = moving.astype(np.float32)
    rng = np.random.default_rng(0)
    u = 2.5 * np.stack(
        [np.sin(grid[..., 1] / 6 + rng.uniform()), np.cos(grid[..., 0] / 7)], -1
    ).astype(np.float32)
    fixed = dense_fields.warp_displacement(jnp.asarray(moving), jnp.asarray(u))
    batch = {
        "fixed": jnp.stack([fixed] * 4),
        "moving": jnp.stack([jnp.asarray(moving)] * 4),
        "flow": jnp.stack([jnp.asarray(u)] * 4),
    }
    roles = (
        ("fixed", schema.image()),
        ("moving", schema.image()),
        ("flow", schema.VECTOR),
    )
    augment = Augmentation(**AFFINE, **(ELASTIC if elastic else {}))
    out = jitted(augment, roles)(random_key(3), batch)
    interior = (slice(7, -7), slice(7, -7))
    for i in range(4):
        rewarped = dense_fields.warp_displacement(out["moving"][i], out["flow"][i])
        error = np.abs(np.asarray(rewarped - out["fixed"][i]))[interior]
        # Linear interpolation of a smooth image, twice: a few hundredths.
        assert error.max() < 0.04, error.max()
    # Resampled like an image, without turning its vectors, the field misses.
    as_image = tuple((k, schema.image() if k == "flow" else r) for k, r in roles)
    stale = jitted(augment, as_image)(random_key(3), batch)
    misses = [
        np.abs(
            np.asarray(
                dense_fields.warp_displacement(out["moving"][i], stale["flow"][i])
                - out["fixed"][i]
            )
        )[interior].max()
        for i in range(4)
    ]
    assert max(misses) > 0.15, misses
    assert not np.allclose(out["flow"], batch["flow"], atol=0.1)


def test_boxes_are_the_box_of_their_moved_corners():
    shape = (31, 29)
    rng = np.random.default_rng(1)
    low = rng.uniform(4, 14, (3, 4, 2))
    high = low + rng.uniform(2, 8, (3, 4, 2))
    box = np.concatenate([low, high], -1).astype(np.float32)  # [B=3, N=4, 4]
    corners = np.stack(
        [box[..., [0, 1]], box[..., [0, 3]], box[..., [2, 1]], box[..., [2, 3]]], -2
    ).reshape(3, 16, 2)
    valid = np.ones((3, 4), bool)
    valid[:, -1] = False
    batch = {
        "image": jnp.zeros((3, *shape, 1)),
        "boxes": jnp.asarray(box),
        "boxes_valid": jnp.asarray(valid),
        "corners": jnp.asarray(corners),
        "corners_valid": jnp.ones((3, 16), bool),
    }
    roles = IMAGE + (
        ("boxes", schema.boxes("boxes_valid")),
        ("boxes_valid", schema.VALID),
        ("corners", schema.points("corners_valid")),
        ("corners_valid", schema.VALID),
    )
    out = jitted(Augmentation(**AFFINE), roles)(random_key(4), batch)
    moved = np.asarray(out["corners"]).reshape(3, 4, 4, 2)
    expected = np.concatenate([moved.min(-2), moved.max(-2)], -1)
    expected = np.clip(expected, 0, np.tile(np.asarray(shape) - 1, 2))
    expected[:, -1] = box[:, -1]  # invalid rows are padding: left as they were
    np.testing.assert_allclose(out["boxes"], expected, atol=1e-4)
    np.testing.assert_array_equal(out["boxes_valid"], valid)
    assert np.abs(np.asarray(out["boxes"]) - box).max() > 1.0


def test_a_box_zoomed_out_of_the_image_becomes_invalid():
    shape = (21, 21)  # centre (10, 10); a zoom by 3 maps p to 10 + 3 (p - 10)
    box = jnp.asarray([[[1.0, 1.0, 3.0, 4.0], [9.0, 8.0, 11.0, 10.0]]])
    batch = {
        "image": jnp.zeros((1, *shape, 1)),
        "boxes": box,
        "boxes_valid": jnp.ones((1, 2), bool),
    }
    roles = IMAGE + (
        ("boxes", schema.boxes("boxes_valid")),
        ("boxes_valid", schema.VALID),
    )
    zoom = Augmentation(zoom_probability=1.0, zoom_range=(3.0, 3.0))
    out = zoom(random_key(0), batch, roles)
    np.testing.assert_array_equal(out["boxes_valid"], [[False, True]])
    # The centre box grows by 3 about (10, 10): rows 7..13, columns 4..10.
    np.testing.assert_allclose(out["boxes"][0, 1], [7.0, 4.0, 13.0, 10.0], atol=1e-4)


SEQUENCE = {
    **AFFINE,
    "flip_probability": 0.5,
    "scale_probability": 1.0,
    "scale_range": (0.8, 1.2),
    "gamma_probability": 1.0,
    "gamma_range": (0.7, 1.5),
    "blur_probability": 1.0,
    "blur_sigma_range": (0.5, 1.0),
}


def test_a_sequence_of_equal_frames_moves_as_its_single_frame():
    # Cine [B, T, H, W, 1]: one transform and one intensity draw for all frames,
    # so equal frames stay equal and equal the single frame augmented alone (a
    # 3D treatment of [T, H, W] would draw three angles and mix the frames).
    rng = np.random.default_rng(2)
    frame = rng.uniform(0, 1, (3, 17, 15, 1)).astype(np.float32)
    labels = rng.choice([0, 1, 2], (3, 17, 15)).astype(np.int32)
    frames = 4
    sequence = {
        "image": jnp.asarray(np.stack([frame] * frames, 1)),
        "mask": jnp.asarray(np.stack([labels] * frames, 1)),
    }
    single = {"image": jnp.asarray(frame), "mask": jnp.asarray(labels)}
    augment = Augmentation(**SEQUENCE)
    timed = (("image", schema.image(time=True)), ("mask", schema.label_map(time=True)))
    still = (("image", schema.image()), ("mask", schema.label_map()))
    out = jitted(augment, timed)(random_key(5), sequence)
    alone = jitted(augment, still)(random_key(5), single)
    assert out["image"].shape == sequence["image"].shape
    for t in range(frames):
        np.testing.assert_allclose(out["image"][:, t], alone["image"], atol=1e-6)
        np.testing.assert_array_equal(out["mask"][:, t], alone["mask"])
    assert not np.allclose(alone["image"], frame, atol=0.05)
    assert not np.array_equal(alone["mask"], labels)


def test_instance_maps_move_like_label_maps():
    rng = np.random.default_rng(3)
    batch = {
        "image": jnp.asarray(rng.uniform(0, 1, (2, 13, 11, 1)), jnp.float32),
        "lesions": jnp.asarray(rng.choice([0, 1, 2, 3], (2, 13, 11)), jnp.int32),
    }
    augment = Augmentation(**AFFINE)
    as_labels = jitted(augment, IMAGE + (("lesions", schema.label_map()),))
    as_instances = jitted(augment, IMAGE + (("lesions", schema.instance_map()),))
    labels = as_labels(random_key(6), batch)["lesions"]
    instances = as_instances(random_key(6), batch)["lesions"]
    np.testing.assert_array_equal(instances, labels)
    assert not np.array_equal(instances, batch["lesions"])


def test_fields_of_other_roles_pass_through():
    batch = {
        "image": jnp.ones((2, 7, 6, 1)),
        "label": jnp.asarray([1, 0]),
        "radius": jnp.asarray([2.0, 3.0]),
    }
    roles = IMAGE + (("label", schema.CLASS), ("radius", schema.REGRESSION_TARGET))
    out = Augmentation(**AFFINE)(random_key(7), batch, roles)
    assert out["label"] is batch["label"] and out["radius"] is batch["radius"]


def test_a_mapping_of_roles_is_accepted_and_bad_entries_are_refused():
    batch = {"image": jnp.ones((1, 7, 6, 1))}
    augment = Augmentation(rotation_probability=1.0, rotation_degrees=10.0)
    out = augment(random_key(0), batch, {"image": schema.image()})
    assert out["image"].shape == (1, 7, 6, 1)
    with pytest.raises(TypeError, match="schema entries are"):
        augment(random_key(0), batch, (("image", "image"),))
    with pytest.raises(ValueError, match=r"\[B, T, \*spatial, C\]"):
        augment(random_key(0), batch, (("image", schema.image(time=True)),))
