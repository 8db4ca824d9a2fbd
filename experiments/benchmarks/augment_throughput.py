"""Augmented images per second: medjax's on-device augmentation (jitted, one
resampling per field) against scipy.ndimage applied image by image on the host.

Both sides do the same work per example: one affine resampling of the image
(linear) and its label map (nearest), an elastic-free 'standard' augmentation
(rotation, zoom, shear, translation, flip, intensity rescale, Gaussian noise).
scipy gets the identical matrices medjax draws, so the geometry matches.

Run:  python experiments/benchmarks/augment_throughput.py [--repeats 5]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage as ndi

from medjax.augment import Augmentation
from medjax.data import schema
from medjax.ops import spatial

STANDARD = Augmentation(
    flip_probability=0.5,
    rotation_probability=1.0,
    rotation_degrees=15,
    translation_probability=1.0,
    translation_fraction=0.1,
    zoom_probability=1.0,
    zoom_range=(0.85, 1.15),
    shear_probability=1.0,
    shear_max=0.1,
    scale_probability=1.0,
    scale_range=(0.85, 1.15),
    noise_probability=1.0,
    noise_std_range=(0.0, 0.05),
)
# The fields' roles, as a segmentation task's batch_roles() gives them.
ROLES = (("image", schema.image()), ("mask", schema.label_map()))


def random_affines(rng, batch, shape):
    """Forward matrices like the augmentation draws (rotation, zoom, shear,
    translation, flip about the centre)."""
    ndim = len(shape)
    matrices = []
    for _ in range(batch):
        angles = rng.uniform(-0.26, 0.26, 1 if ndim == 2 else 3)
        shear = rng.uniform(-0.1, 0.1, 1 if ndim == 2 else 3)
        matrices.append(
            np.asarray(
                spatial.affine_matrix(
                    ndim,
                    rotation=angles[0] if ndim == 2 else angles,
                    translation=rng.uniform(-0.1, 0.1, ndim) * np.array(shape),
                    zoom=rng.uniform(0.85, 1.15, ndim),
                    shear=shear[0] if ndim == 2 else shear,
                    flip=rng.random(ndim) < 0.5,
                    center=spatial.image_center(shape),
                )
            )
        )
    return matrices


def scipy_augment(rng, images, masks, matrices):
    out_images, out_masks = [], []
    for image, mask, matrix in zip(images, masks, matrices):
        inverse = np.linalg.inv(matrix)
        linear, offset = inverse[:-1, :-1], inverse[:-1, -1]
        warped = ndi.affine_transform(
            image[..., 0], linear, offset, order=1, cval=float(image.min())
        )
        warped *= rng.uniform(0.85, 1.15)
        warped += rng.normal(0, rng.uniform(0, 0.05), warped.shape)
        out_images.append(warped[..., None])
        out_masks.append(ndi.affine_transform(mask, linear, offset, order=0))
    return np.stack(out_images), np.stack(out_masks)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def bench(name, shape, batch, repeats):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch, *shape, 1)).astype(np.float32)
    masks = (rng.random((batch, *shape)) < 0.3).astype(np.int32)
    device_batch = {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}
    augment = jax.jit(lambda key, b: STANDARD(key, b, ROLES))
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    start = time.perf_counter()
    jax.block_until_ready(augment(next(keys), device_batch))
    compile_s = time.perf_counter() - start
    medjax_t = timed(
        lambda: jax.block_until_ready(augment(next(keys), device_batch)), repeats
    )
    matrices = random_affines(rng, batch, shape)
    scipy_t = timed(lambda: scipy_augment(rng, images, masks, matrices), repeats)
    medjax_rate, scipy_rate = batch / medjax_t[0], batch / scipy_t[0]
    print(
        f"{name:>18}  batch {batch:3d}  medjax {medjax_rate:9.1f} img/s "
        f"(median {medjax_t[0] * 1e3:7.1f} ms, range {medjax_t[1] * 1e3:.1f}-"
        f"{medjax_t[2] * 1e3:.1f}; compile {compile_s:.1f} s)  scipy {scipy_rate:9.1f} img/s "
        f"(median {scipy_t[0] * 1e3:7.1f} ms)  ratio medjax/scipy {medjax_rate / scipy_rate:5.2f}x"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} "
        f"({jax.device_count()} device(s)); image + label map, 'standard' geometry "
        f"and intensity"
    )
    bench("2D 256x256", (256, 256), 32, args.repeats)
    bench("3D 64x64x64", (64, 64, 64), 8, args.repeats)


if __name__ == "__main__":
    main()
