"""On-device augmentation: pass-through, determinism, fields moving together,
intensity parts against hand-computed / dm-pix / scipy references, configs."""

import functools
import glob
import math
import os

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from omegaconf import OmegaConf

from medjax.augment import Augmentation
from medjax.config import CONFIG_DIR
from medjax.config.build import ConfigError, build
from medjax.data import schema
from medjax.ops import spatial
from medjax.runtime import random_key

SHAPES = {2: (21, 19), 3: (11, 9, 7)}
# The roles of the fields moved: ((key, Role), ...) as Task.batch_roles() gives.
IMAGE = (("image", schema.image()),)
POINTS = (("points", schema.points("points_valid")), ("points_valid", schema.VALID))
FIELDS_POINTS = IMAGE + POINTS
FIELDS = IMAGE + (("mask", schema.label_map()),) + POINTS

# Every geometric part at once, small enough that the test objects stay inside.
GEOMETRY = {
    "flip_probability": 0.5,
    "rotation_probability": 1.0,
    "rotation_degrees": 30.0,
    "zoom_probability": 1.0,
    "zoom_range": (0.9, 1.15),
    "shear_probability": 1.0,
    "shear_max": 0.08,
    "translation_probability": 1.0,
    "translation_fraction": 0.03,
}
EVERYTHING = dict(
    GEOMETRY,
    elastic_probability=1.0,
    elastic_sigma=4.0,
    elastic_magnitude=1.0,
    scale_probability=1.0,
    scale_range=(0.8, 1.2),
    shift_probability=1.0,
    shift_range=(-0.1, 0.1),
    gamma_probability=1.0,
    gamma_range=(0.7, 1.5),
    noise_probability=1.0,
    noise_std_range=(0.01, 0.1),
    blur_probability=1.0,
    blur_sigma_range=(0.5, 1.0),
)


def random_batch(ndim, batch=3, channels=2, seed=0):
    """Random images, 4-label masks, 5 points of which the last is invalid."""
    shape = SHAPES[ndim]
    rng = np.random.default_rng(seed)
    points = rng.uniform(1, np.asarray(shape) - 2, (batch, 5, ndim))
    valid = np.ones((batch, 5), bool)
    valid[:, -1] = False
    return {
        "image": jnp.asarray(
            rng.uniform(0.1, 1, (batch, *shape, channels)), jnp.float32
        ),
        "mask": jnp.asarray(rng.choice([0, 1, 2, 7], (batch, *shape)), jnp.int32),
        "points": jnp.asarray(points, jnp.float32),
        "points_valid": jnp.asarray(valid),
        "label": jnp.arange(batch, dtype=jnp.int32),
    }


def square_batch(ndim, batch=6):
    """A bright off-centre square/cube in image and mask; its centre as a point."""
    shape, low, high = {
        2: ((41, 39), (10, 22), (17, 29)),
        3: ((23, 21, 19), (6, 8, 5), (11, 13, 10)),
    }[ndim]
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    mask = np.zeros(shape, np.int32)
    mask[box] = 1
    center = (np.asarray(low) + np.asarray(high) - 1) / 2
    return {
        "image": jnp.asarray(
            np.broadcast_to(mask[..., None], (batch, *shape, 1)), jnp.float32
        ),
        "mask": jnp.asarray(np.broadcast_to(mask, (batch, *shape))),
        "points": jnp.asarray(np.broadcast_to(center, (batch, 1, ndim)), jnp.float32),
        "points_valid": jnp.ones((batch, 1), bool),
    }


@functools.cache
def jitted(augment, roles=IMAGE):
    """``augment(key, batch, roles)`` compiled once per setting and shapes."""
    return jax.jit(functools.partial(augment, schema=roles))


def assert_batches_equal(got, expected):
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("ndim", [2, 3])
def test_all_parts_off_returns_the_batch_unchanged(ndim):
    batch = random_batch(ndim)
    out = Augmentation()(random_key(0), batch, FIELDS)
    assert_batches_equal(out, batch)


def test_all_off_passes_batches_without_images_through():
    # augment=none with tabular data: nothing to move, nothing checked.
    batch = {"features": jnp.ones((4, 30)), "valid": jnp.ones(4, bool)}
    tabular = (("features", schema.TABULAR),)
    out = Augmentation()(random_key(0), batch, tabular)
    assert out is not batch and out["features"] is batch["features"]
    with pytest.raises(ValueError, match="no image, label_map, .* features 'features'"):
        Augmentation(noise_probability=0.5)(random_key(0), batch, tabular)


@pytest.mark.parametrize("ndim", [2, 3])
def test_parts_that_are_drawn_but_off_leave_the_example_exactly(ndim):
    # Probabilities > 0 make the parts traced; examples that draw "off" for all of
    # them (here: flip on an axis that is never allowed) pass through exactly.
    batch = random_batch(ndim)
    out = Augmentation(flip_probability=1.0, flip_axes=())(
        random_key(0), batch, FIELDS
    )
    assert_batches_equal(out, batch)


@pytest.mark.parametrize("ndim", [2, 3])
def test_identity_parameters_leave_fields_in_place(ndim):
    identity = Augmentation(
        rotation_probability=1.0,
        rotation_degrees=0.0,
        zoom_probability=1.0,
        zoom_range=(1.0, 1.0),
        shear_probability=1.0,
        shear_max=0.0,
        translation_probability=1.0,
        translation_fraction=0.0,
        scale_probability=1.0,
        shift_probability=1.0,
        gamma_probability=1.0,
    )
    batch = random_batch(ndim)
    out = jitted(identity, FIELDS)(random_key(1), batch)
    np.testing.assert_allclose(out["image"], batch["image"], atol=1e-5)
    np.testing.assert_array_equal(out["mask"], batch["mask"])
    np.testing.assert_allclose(out["points"], batch["points"], atol=1e-5)
    np.testing.assert_array_equal(out["points_valid"], batch["points_valid"])
    # ...while a non-zero rotation does move them.
    rotated = Augmentation(rotation_probability=1.0, rotation_degrees=30.0)
    moved = jitted(rotated, FIELDS)(random_key(1), batch)
    assert np.abs(moved["image"] - batch["image"]).max() > 0.1
    assert np.abs(moved["points"] - batch["points"]).max() > 0.1


@pytest.mark.parametrize("ndim", [2, 3])
def test_same_key_same_output_different_key_different_output(ndim):
    augment = Augmentation(**EVERYTHING)
    batch = random_batch(ndim)
    run = jitted(augment, FIELDS)
    first = run(random_key(3), batch)
    again = run(random_key(3), batch)
    other = run(random_key(4), batch)
    assert_batches_equal(again, first)
    for name in ("image", "mask", "points"):
        assert not np.array_equal(other[name], first[name]), name


def centre_of_mass(mask):
    return np.argwhere(np.asarray(mask) == 1).mean(axis=0)


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


ELASTIC = {"elastic_probability": 1.0, "elastic_sigma": 4.0, "elastic_magnitude": 1.0}


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("elastic", [False, True], ids=["affine", "affine+elastic"])
def test_image_mask_and_points_move_together(ndim, elastic):
    settings = {**GEOMETRY, **(ELASTIC if elastic else {})}
    batch = square_batch(ndim)
    out = jitted(Augmentation(**settings), FIELDS)(random_key(5), batch)
    travelled = []
    for i in range(batch["image"].shape[0]):
        point = np.asarray(out["points"][i, 0])
        assert bool(out["points_valid"][i, 0])
        # The object stays whole inside the image (else its centroid would shift).
        assert (out["mask"][i] == 1).sum() > 0.7 * (batch["mask"][i] == 1).sum()
        if not elastic:  # an affine map keeps centroids; a non-linear warp does not
            distance = np.linalg.norm(centre_of_mass(out["mask"][i]) - point)
            assert distance <= 0.75
        assert dice(out["image"][i, ..., 0] > 0.5, out["mask"][i] == 1) > 0.9
        travelled.append(np.linalg.norm(point - np.asarray(batch["points"][i, 0])))
    assert max(travelled) > 2.0  # the test is not passing on unmoved objects


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("elastic", [False, True], ids=["affine", "affine+elastic"])
def test_points_land_where_the_image_moved_their_voxel(ndim, elastic):
    # Images whose channels are the voxel coordinates: after the warp, the image
    # read at a moved point must give back that point's original coordinates.
    settings = {**GEOMETRY, **(ELASTIC if elastic else {})}
    shape = {2: (41, 39), 3: (23, 21, 19)}[ndim]
    center = (np.asarray(shape) - 1) / 2
    offsets = np.random.default_rng(16).uniform(-4, 4, (6, 8, ndim))
    batch = {
        "image": jnp.broadcast_to(spatial.identity_grid(shape), (6, *shape, ndim)),
        "points": jnp.asarray(center + offsets, jnp.float32),
        "points_valid": jnp.ones((6, 8), bool),
    }
    out = jitted(Augmentation(**settings), FIELDS_POINTS)(random_key(17), batch)
    assert bool(out["points_valid"].all())
    for i in range(6):
        read = spatial.sample(out["image"][i], out["points"][i], order=1)
        # Elastic: the read-back and d at the point are both linear interpolations
        # of a curved map, so they agree to about a tenth of a voxel.
        np.testing.assert_allclose(
            read, batch["points"][i], atol=0.15 if elastic else 1e-3
        )
    assert np.abs(out["points"] - batch["points"]).max() > 2.0


def test_masks_keep_their_dtype_and_labels():
    batch = random_batch(2)
    out = jitted(Augmentation(**EVERYTHING), FIELDS)(random_key(6), batch)
    assert out["mask"].dtype == jnp.int32
    labels = set(np.unique(out["mask"]).tolist())
    assert labels <= {0, 1, 2, 7} and len(labels) == 4
    assert not np.array_equal(out["mask"], batch["mask"])
    batch["mask"] = batch["mask"] > 0
    out = jitted(Augmentation(**EVERYTHING), FIELDS)(random_key(6), batch)
    assert out["mask"].dtype == jnp.bool_ and out["mask"].any()


@pytest.mark.parametrize("ndim", [2, 3])
def test_flip_of_axis_0_is_jnp_flip(ndim):
    batch = random_batch(ndim)
    out = Augmentation(flip_probability=1.0, flip_axes=(0,))(
        random_key(7), batch, FIELDS
    )
    np.testing.assert_array_equal(out["image"], jnp.flip(batch["image"], axis=1))
    np.testing.assert_array_equal(out["mask"], jnp.flip(batch["mask"], axis=1))
    expected = np.array(batch["points"])
    flipped = SHAPES[ndim][0] - 1 - expected[..., 0]
    valid = np.asarray(batch["points_valid"])
    expected[..., 0] = np.where(valid, flipped, expected[..., 0])  # padding stays
    np.testing.assert_allclose(out["points"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["points_valid"], batch["points_valid"])


def test_flip_is_drawn_per_example_with_its_probability():
    batch = {"image": jax.random.uniform(random_key(0), (64, 7, 5, 1))}
    out = jitted(Augmentation(flip_probability=0.5, flip_axes=(0,)))(
        random_key(8), batch
    )
    flipped = np.all(out["image"] == jnp.flip(batch["image"], axis=1), axis=(1, 2, 3))
    unchanged = np.all(out["image"] == batch["image"], axis=(1, 2, 3))
    assert np.all(flipped ^ unchanged)
    assert 16 <= flipped.sum() <= 48


def test_background_entering_the_image_is_each_channels_minimum():
    # A deterministic zoom out by 2 about the centre against scipy's affine warp.
    rng = np.random.default_rng(9)
    image = rng.uniform(0, 1, (21, 19, 2)).astype(np.float32)
    image[..., 1] += 3.0  # channel minima differ: ~0 and ~3
    zoom_out = Augmentation(zoom_probability=1.0, zoom_range=(0.5, 0.5))
    out = zoom_out(random_key(0), {"image": jnp.asarray(image)[None]}, IMAGE)[
        "image"
    ][0]
    center = (np.asarray(image.shape[:2]) - 1) / 2
    for c in range(2):
        expected = scipy.ndimage.affine_transform(
            image[..., c],
            np.eye(2) * 2.0,
            offset=center - 2.0 * center,
            order=1,
            mode="constant",
            cval=image[..., c].min(),
        )
        np.testing.assert_allclose(out[..., c], expected, atol=1e-5)
        assert out[0, 0, c] == image[..., c].min()


def test_gaussian_noise_has_the_requested_std():
    flat = {"image": jnp.full((2, 201, 199, 1), 0.5, jnp.float32)}
    noisy = Augmentation(noise_probability=1.0, noise_std_range=(0.2, 0.2))
    out = np.asarray(noisy(random_key(10), flat, IMAGE)["image"])
    for example in out:
        assert abs(example.std() - 0.2) < 0.005
        assert abs(example.mean() - 0.5) < 0.005
    assert not np.array_equal(out[0], out[1])
    # A range draws one std per example inside it.
    ranged = Augmentation(noise_probability=1.0, noise_std_range=(0.05, 0.3))
    flat = {"image": jnp.full((8, 101, 99, 1), 0.5, jnp.float32)}
    stds = np.asarray(ranged(random_key(11), flat, IMAGE)["image"]).std(
        axis=(1, 2, 3)
    )
    assert np.all((stds > 0.045) & (stds < 0.31)) and stds.max() - stds.min() > 0.05


def test_intensity_rescale_then_shift_by_hand():
    image = jnp.asarray([[[0.0], [1.0], [-2.0]], [[0.25], [3.0], [0.5]]])  # [2, 3, 1]
    rescale = Augmentation(
        scale_probability=1.0,
        scale_range=(2.0, 2.0),
        shift_probability=1.0,
        shift_range=(0.5, 0.5),
    )
    out = rescale(random_key(0), {"image": image[None]}, IMAGE)["image"][0]
    expected = [[[0.5], [2.5], [-3.5]], [[1.0], [6.5], [1.5]]]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_gamma_of_the_min_max_normalised_image():
    image = np.zeros((3, 5, 3), np.float32)
    image[..., 0] = np.linspace(1.0, 3.0, 15).reshape(3, 5)  # range [1, 3]
    image[..., 1] = np.linspace(-4.0, 0.0, 15).reshape(3, 5)[::-1]  # range [-4, 0]
    image[..., 2] = 0.7  # constant: unchanged
    gamma = Augmentation(gamma_probability=1.0, gamma_range=(2.0, 2.0))
    out = np.asarray(
        gamma(random_key(0), {"image": jnp.asarray(image)[None]}, IMAGE)["image"][0]
    )
    expected = image.copy()
    for c, (low, high) in enumerate([(1.0, 3.0), (-4.0, 0.0)]):
        expected[..., c] = (
            low + (high - low) * ((image[..., c] - low) / (high - low)) ** 2
        )
        with_pix = low + (high - low) * dm_pix.adjust_gamma(
            (image[..., c] - low) / (high - low), 2.0
        )
        np.testing.assert_allclose(out[..., c], with_pix, atol=1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_gaussian_blur_matches_scipy(ndim):
    image = np.random.default_rng(12).uniform(0, 1, (1, *SHAPES[ndim], 2))
    blur = Augmentation(blur_probability=1.0, blur_sigma_range=(1.2, 1.2))
    out = blur(random_key(0), {"image": jnp.asarray(image, jnp.float32)}, IMAGE)[
        "image"
    ]
    expected = scipy.ndimage.gaussian_filter(
        image[0],
        sigma=(1.2,) * ndim + (0.0,),
        mode="nearest",
        radius=(math.ceil(3 * 1.2),) * ndim + (0,),
    )
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_points_pushed_outside_the_image_become_invalid():
    shape = SHAPES[2]
    center = (np.asarray(shape) - 1) / 2
    points = np.asarray([[1.0, 1.0], [18.0, 2.0], center + 0.5, center - 0.5])
    batch = {
        "image": jnp.zeros((1, *shape, 1)),
        "points": jnp.asarray(points, jnp.float32)[None],
        "points_valid": jnp.asarray([[True, True, True, False]]),
    }
    zoom_in = Augmentation(zoom_probability=1.0, zoom_range=(3.0, 3.0))
    out = zoom_in(random_key(0), batch, FIELDS_POINTS)
    expected = center + 3.0 * (points - center)
    expected[3] = points[3]  # an invalid row is padding: left as it was
    np.testing.assert_allclose(out["points"][0], expected, atol=1e-4)
    # Corner points leave; the centre stays; an invalid point stays invalid.
    np.testing.assert_array_equal(out["points_valid"][0], [False, False, True, False])


@pytest.mark.parametrize("ndim", [2, 3])
def test_jit_and_independence_from_batch_position(ndim):
    augment = Augmentation(**EVERYTHING)
    batch = random_batch(ndim)
    key = random_key(13)
    out = jitted(augment, FIELDS)(key, batch)
    one = jax.jit(functools.partial(augment.example, schema=FIELDS))
    for i in range(batch["image"].shape[0]):
        example = {name: value[i] for name, value in batch.items()}
        alone = one(jax.random.fold_in(key, i), example)
        np.testing.assert_allclose(alone["image"], out["image"][i], atol=1e-5)
        np.testing.assert_allclose(alone["points"], out["points"][i], atol=1e-5)
        np.testing.assert_array_equal(alone["mask"], out["mask"][i])
        np.testing.assert_array_equal(alone["points_valid"], out["points_valid"][i])
    # The same example at two batch positions is augmented differently.
    twin = {name: jnp.stack([value[0]] * 3) for name, value in batch.items()}
    twins = jitted(augment, FIELDS)(key, twin)["image"]
    assert not np.allclose(twins[0], twins[1])


def test_eager_and_jitted_agree():
    augment = Augmentation(**GEOMETRY, noise_probability=1.0, noise_std_range=(0, 0.1))
    batch = random_batch(2)
    eager = augment(random_key(18), batch, FIELDS)
    compiled = jitted(augment, FIELDS)(random_key(18), batch)
    np.testing.assert_allclose(eager["image"], compiled["image"], atol=1e-5)
    np.testing.assert_allclose(eager["points"], compiled["points"], atol=1e-5)
    assert np.mean(eager["mask"] != compiled["mask"]) < 0.01  # rounding at .5 ties


def test_fields_not_named_pass_through():
    batch = random_batch(2)
    batch["other_image"] = batch["image"] + 1.0
    out = jitted(Augmentation(**EVERYTHING))(random_key(14), batch)  # image only
    for name in ("mask", "points", "points_valid", "label", "other_image"):
        assert out[name].dtype == batch[name].dtype
        np.testing.assert_array_equal(out[name], batch[name])
    assert not np.allclose(out["image"], batch["image"])


def test_bad_batches_are_refused_before_tracing():
    batch = random_batch(2)
    augment = Augmentation(rotation_probability=1.0)
    with pytest.raises(ValueError, match="no field 'seg'"):
        augment(random_key(0), batch, IMAGE + (("seg", schema.label_map()),))
    with pytest.raises(ValueError, match=r"augment.flip_axes=\[2\]"):
        Augmentation(flip_probability=0.5, flip_axes=(2,))(
            random_key(0), batch, IMAGE
        )
    with pytest.raises(ValueError, match="floating-point image"):
        augment(random_key(0), {"image": batch["mask"][..., None]}, IMAGE)
    with pytest.raises(ValueError, match="'points'"):
        augment(
            random_key(0),
            dict(batch, points=batch["points"][..., :1]),
            FIELDS_POINTS,
        )


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("rotation_probability", 1.5, "a probability in"),
        ("noise_probability", -0.1, "a probability in"),
        ("zoom_range", (1.2, 0.8), "min <= max"),
        ("zoom_range", (0.0, 1.0), "factors > 0"),
        ("gamma_range", (1.0,), "pair"),
        ("noise_std_range", (-1.0, 1.0), "stds >= 0"),
        ("blur_sigma_range", (0.0, 1.0), "voxels > 0"),
        ("rotation_degrees", 270.0, "an angle in"),
        ("translation_fraction", "0.1", "a fraction"),
        ("elastic_sigma", 0.0, "voxels > 0"),
        ("flip_axes", (-1,), "axis indices"),
        ("shift_range", (0.0, math.inf), "finite"),
    ],
)
def test_invalid_settings_name_the_field(field, value, expected):
    with pytest.raises(ValueError, match=rf"^augment\.{field}=.*expected.*{expected}"):
        Augmentation(**{field: value})


def test_settings_are_hashable_and_lists_become_tuples():
    from_lists = Augmentation(
        zoom_range=[0.9, 1], flip_axes=[0], rotation_probability=1
    )
    from_tuples = Augmentation(
        zoom_range=(0.9, 1.0), flip_axes=(0,), rotation_probability=1.0
    )
    assert from_lists == from_tuples and hash(from_lists) == hash(from_tuples)
    assert isinstance(from_lists.zoom_range, tuple)


AUGMENT_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "augment", "*.yaml")))


def test_the_four_presets_exist():
    names = {os.path.splitext(os.path.basename(p))[0] for p in AUGMENT_CONFIGS}
    assert names == {"none", "light", "standard", "strong", "cine"}


@pytest.mark.parametrize("path", AUGMENT_CONFIGS, ids=os.path.basename)
def test_config_builds_and_runs(path):
    augment = build(OmegaConf.load(path), "augment")
    assert isinstance(augment, Augmentation)
    batch = random_batch(2)
    out = jitted(augment, FIELDS)(random_key(15), batch)
    for name, value in batch.items():
        assert out[name].shape == value.shape and out[name].dtype == value.dtype
    assert np.isfinite(out["image"]).all()
    if path.endswith("none.yaml"):
        assert_batches_equal(out, batch)
    else:
        assert not np.array_equal(out["image"], batch["image"])


def test_bad_config_value_is_a_config_error_naming_the_option():
    node = OmegaConf.create(
        {"_target_": "medjax.augment.Augmentation", "zoom_range": [2, 1]}
    )
    with pytest.raises(ConfigError, match=r"^augment\.zoom_range="):
        build(node, "augment")
