"""Fingerprints of every model preset's parameters and outputs, recorded before
the models shared one layers module (``models/layers.py``) and compared by
``test_layers.py``: same parameter paths, shapes and initial values, and the same
outputs in training and evaluation, so checkpoints and ``metrics.jsonl`` of
earlier runs stay valid.

Regenerate (only when a change of numbers is intended) with
``python -m tests.models.fingerprints tests/models/fingerprints.json``.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from medjax.runtime import random_key


def cases():
    """``{name: (model, input shape)}``; every model kind and norm kind."""
    from medjax.models import autoencoder as ae
    from medjax.models import cnn, dbn, mlp, multistream, unet

    return {
        "cnn_tiny": (cnn.cnn_tiny(num_classes=3), (2, 13, 11, 1)),
        "cnn_tiny_group": (cnn.cnn_tiny(num_classes=3, norm="group"), (2, 12, 12, 1)),
        "cnn_tiny_none": (cnn.cnn_tiny(num_classes=3, norm="none"), (2, 12, 12, 1)),
        "cnn_tiny_3d_imagenet": (
            cnn.cnn_tiny(num_classes=2, spatial_dims=3, stem="imagenet"),
            (2, 9, 8, 7, 1),
        ),
        "resnet_tiny_frozen1": (
            cnn.resnet_tiny(num_classes=3, frozen_stages=1),
            (2, 12, 12, 2),
        ),
        "multistream_tiny": (
            multistream.multistream_tiny(num_classes=2, num_streams=2, fusion_hidden=5),
            ((2, 9, 9, 1), (2, 8, 8, 1)),
        ),
        "multistream_tiny_shared": (
            multistream.multistream_tiny(
                num_classes=2, num_streams=2, shared_weights=True, residual=True
            ),
            ((2, 9, 9, 1), (2, 8, 8, 1)),
        ),
        "unet_tiny": (unet.unet_tiny(num_classes=3), (2, 13, 12, 1)),
        "unet_tiny_instance_residual": (
            unet.unet_tiny(num_classes=2, norm="instance", residual=True),
            (1, 8, 8, 2),
        ),
        "unet_tiny_group_resize": (
            unet.unet_tiny(
                num_classes=2, norm="group", num_groups=3, upsample="resize"
            ),
            (1, 9, 8, 1),
        ),
        "unet_tiny_none_3d": (
            unet.unet_tiny(num_classes=2, norm="none", spatial_dims=3),
            (1, 5, 6, 4, 1),
        ),
        "autoencoder_tiny_batch": (ae.autoencoder_tiny(norm="batch"), (2, 9, 10, 1)),
        "autoencoder_tiny_group": (ae.autoencoder_tiny(norm="group"), (2, 8, 8, 1)),
        "vae_tiny": (ae.vae_tiny(), (2, 8, 9, 1)),
        "dense_autoencoder_tiny": (ae.dense_autoencoder_tiny(), (2, 5, 6, 1)),
        "stacked_autoencoder_tiny": (ae.stacked_autoencoder_tiny(), (2, 5, 6, 1)),
        "encoder_classifier_batch": (
            ae.EncoderClassifier(num_classes=3, widths=(4, 8), latent=8, norm="batch"),
            (2, 8, 8, 1),
        ),
        "dbn_tiny": (dbn.dbn_tiny(num_classes=3, dropout_rate=0.5), (2, 4, 5, 1)),
        "mlp_tiny": (mlp.mlp_tiny(num_outputs=3, dropout_rate=0.5), (2, 4, 5, 1)),
    }


def _sample(shape, seed):
    if isinstance(shape[0], tuple):
        return tuple(_sample(s, seed + i) for i, s in enumerate(shape))
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _summary(tree) -> dict:
    """``{path: [shape, sum, sum of absolute values]}`` of a pytree of arrays."""
    if not isinstance(tree, dict):
        tree = (
            {"output": tree} if not isinstance(tree, tuple) else dict(enumerate(tree))
        )
    flat = traverse_util.flatten_dict(tree, sep="/") if tree else {}
    return {
        str(k): [list(np.shape(v)), float(np.sum(v)), float(np.sum(np.abs(v)))]
        for k, v in flat.items()
    }


def fingerprint(model, shape) -> dict:
    """Summaries of ``init``, the evaluation output, and the training output and
    updated statistics for fixed keys and a fixed input."""
    x = _sample(shape, seed=0)
    variables = model.init(random_key(0), x, train=False)
    rngs = {"dropout": random_key(1), "sample": random_key(2)}
    evaluated = model.apply(variables, x, train=False)
    trained, updates = model.apply(
        variables, x, train=True, rngs=rngs, mutable=["batch_stats"]
    )
    return {
        "variables": _summary(jax.tree.map(np.asarray, dict(variables))),
        "eval": _summary(jax.tree.map(np.asarray, evaluated)),
        "train": _summary(jax.tree.map(np.asarray, trained)),
        "updates": _summary(jax.tree.map(np.asarray, dict(updates))),
    }


if __name__ == "__main__":
    result = {name: fingerprint(*case) for name, case in cases().items()}
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=0, sort_keys=True)
