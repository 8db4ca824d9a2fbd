"""How fast can a learned registration network be on this CPU? A roofline.

The issue's target asks the learned dense model for the iterative dense
method's Dice at >= 100x its speed per pair. This script bounds the learned
side from below: the floating-point work of each registration network's
forward pass on one 64² pair (or 64³ with ``--dims 3``; XLA's own count of the ``conv_impl=xla``
program), divided by the best matrix-product rate this machine reaches (a
2048² float32 product, the most efficient kernel there is). No implementation
of that network can be faster than that bound; the measured time per pair
(a batch of 100 pairs, after compilation, ``conv_impl=auto`` as trained) is
printed beside it, and so is the iterative dense method's time per pair on
the study's first 100 monomodal test pairs (its settings, SSD and NCC, timed
in the same run; its Dice there is in ``study_table.md``).

    python experiments/registration/speed_floor.py
    python experiments/registration/speed_floor.py --dims 3 --pairs 4
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from medjax.config import compose
from medjax.config.run import build_run
from medjax.models.registration import affine, voxelmorph
from medjax.runtime import random_key
from medjax.tasks.registration import IterativeRegistration

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import learned  # noqa: E402

NETWORKS = {
    "VoxelMorph-style": lambda impl, dims: voxelmorph.voxelmorph_small(
        spatial_dims=dims, conv_impl=impl),
    "diffeomorphic": lambda impl, dims: voxelmorph.voxelmorph_small(
        spatial_dims=dims, diffeomorphic=True, conv_impl=impl),
    "affine net": lambda impl, dims: affine.affine_net_small(spatial_dims=dims,
                                                             conv_impl=impl),
}


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n float32 matrix product (best of ``repeats``)."""
    m = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    _, seconds = learned.timed(product, m, repeats=repeats)
    return 2 * n**3 / seconds / 1e9


def forward_gflop(make, shape) -> float:
    """XLA's flop count of one forward pass on a batch of ``shape``, in GFLOP."""
    model = make("xla", len(shape) - 2)
    x = jnp.zeros(shape, jnp.float32)
    variables = model.init(random_key(0), x, train=False)
    compiled = jax.jit(lambda v, a: model.apply(v, a, train=False)).lower(variables, x).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) / 1e9


def measured_seconds(make, shape) -> float:
    model = make("auto", len(shape) - 2)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    variables = model.init(random_key(0), x, train=False)
    apply = jax.jit(lambda v, a: model.apply(v, a, train=False))
    _, seconds = learned.timed(apply, variables, x)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2,
                        help="3: torso3d 64³ volume pairs (the study's 2D pairs otherwise)")
    args = parser.parse_args()
    rate = matmul_rate()
    print(f"matmul rate (2048² float32): {rate:.0f} GFLOP/s")
    shape = (args.pairs, *(64,) * args.dims, 2)
    print(f"\n{'network':<18} {'GFLOP/pair':>11} {'floor s/pair':>13} {'measured s/pair':>16}")
    for name, make in NETWORKS.items():
        gflop = forward_gflop(make, shape) / args.pairs
        seconds = measured_seconds(make, shape) / args.pairs
        print(f"{name:<18} {gflop:>11.4f} {gflop / rate:>13.6f} {seconds:>16.6f}")
    import study  # the study's pairs and iterative settings

    if args.dims == 2:
        _, _, pairs = study.phantom_pairs("monomodal", args.pairs)
    else:
        run = build_run(compose("train", ["experiment=registration_voxelmorph",
                                          "data=phantoms3d", "model.spatial_dims=3"]))
        pairs = learned.test_pairs(run.task, run.data, args.pairs)
    print(f"\niterative dense on {args.pairs} monomodal test pairs of "
          f"{pairs['fixed'].shape[1:-1]}, and the 100x budget:")
    for similarity in ("ssd", "ncc"):
        method = IterativeRegistration("dense", similarity, **study.DENSE)
        _, seconds = learned.timed(lambda f, m: method(f, m)["displacement"],
                                   pairs["fixed"], pairs["moving"], repeats=1)
        per_pair = seconds / args.pairs
        print(f"  {similarity}: {per_pair:.6f} s/pair -> 100x: {per_pair / 100:.6f} s/pair")


if __name__ == "__main__":
    main()
