"""Autoencoders: dense, convolutional (2D and 3D), stacked, and variational.

Every autoencoder here maps ``x [B, *S, C]`` to a dict:

- ``reconstruction [B, *S, num_outputs]``: the decoded image (linear output: the
  targets are windowed CT in [-1, 1]);
- ``latent [B, L]``: the code (for a VAE, the sampled code in training and the
  posterior mean at evaluation);
- VAE only: ``mean [B, L]`` and ``log_variance [B, L]`` of the diagonal Gaussian
  posterior q(z | x), from which a task computes the KL term.

``encode(x, *, train)`` and ``decode(z, *, shape, train)`` are methods, usable with
``model.apply(variables, x, train=False, method="encode")``; ``shape`` is the
spatial shape to decode to: the one the model was initialised with (the Dense
layers' sizes depend on it), odd sizes included (the convolutional decoder
upsamples to the next multiple of 2**depth and crops).

The encoder is a submodule named ``encoder`` (parameters under ``params["encoder"]``)
so that it can serve as a transfer-learning backbone: :class:`EncoderClassifier`
holds an encoder of the same structure and :func:`transfer_encoder` copies a
trained autoencoder's encoder parameters into it. Every model here declares its
encoder as its backbone (``parameter_groups()``, :mod:`medjax.models.groups`).

Losses (reconstruction error, KL) live in ``medjax.losses.reconstruction``, the
tasks (and the denoising corruption) in ``medjax.tasks.reconstruction``; greedy
layer-wise pretraining of :class:`StackedAutoencoder` is
``medjax.engine.pretraining.train_stacked_autoencoder``.
"""

import math
from functools import partial
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.groups import (
    ParameterGroups,
    Transferable,
    one_stage_each,
    single_stage,
)
from medjax.models.layers import normalization
from medjax.models.weights import copy_weights


def _check_rank(name: str, x: jnp.ndarray, spatial_dims: int) -> None:
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name}(spatial_dims={spatial_dims}) expects inputs of rank "
            f"{spatial_dims + 2} (batch, spatial..., channels), got shape {x.shape}"
        )


# --------------------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------------------


class DenseEncoder(nn.Module):
    """Flattens ``x [B, ...]`` and maps it through Dense-ReLU layers of widths
    ``hidden`` to a linear code ``[B, latent]``."""

    hidden: Sequence[int]
    latent: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.latent)(x)


class DenseDecoder(nn.Module):
    """Maps a code ``[B, L]`` through Dense-ReLU layers of widths ``hidden`` to a
    linear output reshaped to ``[B, *shape]`` (``shape`` includes channels)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, z: jnp.ndarray, shape: Sequence[int]) -> jnp.ndarray:
        for width in self.hidden:
            z = nn.relu(nn.Dense(width)(z))
        return nn.Dense(math.prod(shape))(z).reshape((z.shape[0], *shape))


class DenseAutoencoder(nn.Module, Transferable):
    """A fully connected autoencoder of the flattened image.

    Attributes:
        hidden: encoder widths; the decoder mirrors them.
        latent: code size ``L``.
        num_outputs: channels of the reconstruction (usually those of the input).
    """

    hidden: Sequence[int] = (256, 64)
    latent: int = 16
    num_outputs: int = 1

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups((single_stage("encoder", ["encoder"]),))

    def setup(self):
        self.encoder = DenseEncoder(tuple(self.hidden), self.latent)
        self.decoder = DenseDecoder(tuple(reversed(self.hidden)))

    def encode(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        """``x [B, *S, C]`` -> code ``[B, L]``."""
        return self.encoder(x, train=train)

    def decode(self, z: jnp.ndarray, *, shape: Sequence[int], train: bool = False):
        """Code ``[B, L]`` -> ``[B, *shape, num_outputs]``."""
        return self.decoder(z, (*shape, self.num_outputs))

    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        z = self.encode(x, train=train)
        return {"reconstruction": self.decode(z, shape=x.shape[1:-1]), "latent": z}


class StackedAutoencoder(nn.Module, Transferable):
    """A deep dense autoencoder built for greedy layer-wise pretraining
    (Bengio et al. 2007): encoder layer ``k`` (``encoder_k``, Dense-ReLU, the last
    one linear) and decoder layer ``k`` (``decoder_k``) form the shallow
    autoencoder of level ``k``, which pretraining fits to the codes of level
    ``k - 1`` (level 0: the flattened image). The whole stack then trains end to
    end like any model. See ``medjax.engine.pretraining.train_stacked_autoencoder``.

    Attributes:
        hidden: widths of the encoder layers; the last is the code size ``L``.
        num_outputs: channels of the reconstruction.
    """

    hidden: Sequence[int] = (256, 64, 16)
    num_outputs: int = 1

    @property
    def depth(self) -> int:
        return len(self.hidden)

    def parameter_groups(self) -> ParameterGroups:
        layers = [f"encoder_{k}" for k in range(self.depth)]
        return ParameterGroups((one_stage_each("encoder", layers),))

    def layer_activation(self, k: int, z: jnp.ndarray) -> jnp.ndarray:
        """Encoder layer ``k``'s nonlinearity: ReLU except for the linear code."""
        return z if k == self.depth - 1 else nn.relu(z)

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        shape = (*x.shape[1:-1], self.num_outputs)
        sizes = (math.prod(shape), *self.hidden)
        z = x.reshape((x.shape[0], -1))
        for k, width in enumerate(self.hidden):
            z = self.layer_activation(k, nn.Dense(width, name=f"encoder_{k}")(z))
        latent = y = z
        for k in reversed(range(self.depth)):
            y = nn.Dense(sizes[k], name=f"decoder_{k}")(y)
            # Decoder layer k outputs level k - 1's (ReLU) code, or the linear image.
            y = nn.relu(y) if k > 0 else y
        return {"reconstruction": y.reshape((x.shape[0], *shape)), "latent": latent}


# --------------------------------------------------------------------------------------
# Convolutional
# --------------------------------------------------------------------------------------


class ConvEncoder(nn.Module):
    """Stages of conv-norm-ReLU then a stride-2 conv-norm-ReLU (one per width, so
    the grid shrinks by 2**len(widths), rounding up), flattened into a Dense code
    ``[B, latent]``; with ``variational`` a second Dense head gives the
    log-variance, and the call returns ``(mean, log_variance)``."""

    widths: Sequence[int]
    latent: int
    spatial_dims: int = 2
    norm: str = "none"
    variational: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False):
        kernel, stride = (3,) * self.spatial_dims, (2,) * self.spatial_dims
        norm = partial(normalization, self.norm, train=train)
        for width in self.widths:
            x = nn.relu(norm()(nn.Conv(width, kernel)(x)))
            x = nn.relu(norm()(nn.Conv(width, kernel, stride)(x)))
        x = x.reshape((x.shape[0], -1))
        mean = nn.Dense(self.latent, name="latent")(x)
        if not self.variational:
            return mean
        return mean, nn.Dense(self.latent, name="log_variance")(x)


class ConvDecoder(nn.Module):
    """A Dense layer onto the encoder's smallest grid, then per width (reversed) a
    stride-2 transposed conv-norm-ReLU and a conv-norm-ReLU, a 1x1 linear output
    conv, and a crop to the requested ``shape``."""

    widths: Sequence[int]
    spatial_dims: int = 2
    num_outputs: int = 1
    norm: str = "none"

    @nn.compact
    def __call__(self, z: jnp.ndarray, shape: Sequence[int], *, train: bool = False):
        factor = 2 ** len(self.widths)
        grid = tuple(-(-s // factor) for s in shape)  # ceil: SAME stride-2 convs
        widths = tuple(reversed(self.widths))
        y = nn.relu(nn.Dense(math.prod(grid) * widths[0])(z))
        y = y.reshape((z.shape[0], *grid, widths[0]))
        kernel, stride = (3,) * self.spatial_dims, (2,) * self.spatial_dims
        norm = partial(normalization, self.norm, train=train)
        for width in widths:
            y = nn.relu(norm()(nn.ConvTranspose(width, kernel, stride)(y)))
            y = nn.relu(norm()(nn.Conv(width, kernel)(y)))
        y = nn.Conv(self.num_outputs, (1,) * self.spatial_dims)(y)
        return y[(slice(None), *(slice(0, s) for s in shape))]


class ConvAutoencoder(nn.Module, Transferable):
    """Convolutional autoencoder with a vector bottleneck, for 2D images
    ``[B, H, W, C]`` and 3D volumes ``[B, H, W, D, C]`` of any size.

    The dense bottleneck (rather than a spatial one) keeps the code small enough
    that the network cannot copy unusual structures through it, which is what
    reconstruction-based anomaly detection relies on.

    Attributes:
        widths: channels of the encoder stages; each halves the grid.
        latent: code size ``L``.
        spatial_dims: 2 or 3.
        num_outputs: channels of the reconstruction.
        norm: 'none', 'group' or 'batch'.
    """

    widths: Sequence[int] = (16, 32, 64)
    latent: int = 32
    spatial_dims: int = 2
    num_outputs: int = 1
    norm: str = "none"

    variational = False

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups((single_stage("encoder", ["encoder"]),))

    def with_frozen_statistics(self, num_stages: int) -> "ConvAutoencoder | None":
        # No frozen_stages field: running statistics cannot be held fixed.
        return None if self.norm == "batch" else self

    def setup(self):
        if self.spatial_dims not in (2, 3):
            raise ValueError(
                f"model.spatial_dims: expected 2 or 3, got {self.spatial_dims}"
            )
        self.encoder = ConvEncoder(
            tuple(self.widths),
            self.latent,
            self.spatial_dims,
            self.norm,
            self.variational,
        )
        self.decoder = ConvDecoder(
            tuple(self.widths), self.spatial_dims, self.num_outputs, self.norm
        )

    def encode(self, x: jnp.ndarray, *, train: bool = False):
        """``x [B, *S, C]`` -> code ``[B, L]`` (VAE: ``(mean, log_variance)``)."""
        _check_rank(type(self).__name__, x, self.spatial_dims)
        return self.encoder(x, train=train)

    def decode(self, z: jnp.ndarray, *, shape: Sequence[int], train: bool = False):
        """Code ``[B, L]`` -> ``[B, *shape, num_outputs]``."""
        return self.decoder(z, tuple(shape), train=train)

    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        z = self.encode(x, train=train)
        return {
            "reconstruction": self.decode(z, shape=x.shape[1:-1], train=train),
            "latent": z,
        }


class VAE(ConvAutoencoder):
    """Convolutional variational autoencoder (Kingma and Welling 2014).

    The encoder gives a diagonal Gaussian posterior ``(mean, log_variance)``; in
    training the code is drawn by reparameterisation,
    ``z = mean + exp(log_variance / 2) * eps`` with ``eps`` from the ``sample`` RNG
    stream (``medjax.engine.step`` provides it); at evaluation ``z = mean``, so
    reconstructions and anomaly scores are deterministic. Same fields as
    :class:`ConvAutoencoder`.
    """

    variational = True

    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        mean, log_variance = self.encode(x, train=train)
        z = mean
        if train:
            eps = jax.random.normal(self.make_rng("sample"), mean.shape, mean.dtype)
            z = mean + jnp.exp(0.5 * log_variance) * eps
        return {
            "reconstruction": self.decode(z, shape=x.shape[1:-1], train=train),
            "latent": z,
            "mean": mean,
            "log_variance": log_variance,
        }


# --------------------------------------------------------------------------------------
# Transfer learning
# --------------------------------------------------------------------------------------


class EncoderClassifier(nn.Module, Transferable):
    """A classifier on a (pretrained) convolutional autoencoder's encoder: the
    code ``[B, latent]``, dropout, and a Dense head to ``[B, num_classes]``.

    Its ``params["encoder"]`` has the structure of a :class:`ConvAutoencoder`'s
    with the same ``widths``, ``latent``, ``spatial_dims`` and ``norm``; copy
    trained weights in with :func:`transfer_encoder` (and freeze them, if wanted,
    with ``optax.multi_transform`` on the ``encoder`` subtree).
    """

    num_classes: int
    widths: Sequence[int] = (16, 32, 64)
    latent: int = 32
    spatial_dims: int = 2
    norm: str = "none"
    dropout_rate: float = 0.0

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups((single_stage("encoder", ["encoder"]),))

    def with_frozen_statistics(self, num_stages: int) -> "EncoderClassifier | None":
        # No frozen_stages field: running statistics cannot be held fixed.
        return None if self.norm == "batch" else self

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        _check_rank("EncoderClassifier", x, self.spatial_dims)
        z = ConvEncoder(
            tuple(self.widths),
            self.latent,
            self.spatial_dims,
            self.norm,
            name="encoder",
        )(x, train=train)
        z = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(z))
        return nn.Dense(self.num_classes)(z)


def transfer_encoder(target_variables: dict, autoencoder_variables: dict) -> dict:
    """``target_variables`` (e.g. an :class:`EncoderClassifier`'s) with every
    collection's ``encoder`` subtree replaced by the autoencoder's (through
    :func:`medjax.models.weights.copy_weights`, as checkpoints are loaded).

    Raises:
        ValueError: the target has no encoder, or the two encoders' parameters
            differ in names or shapes.
    """
    for collection, tree in autoencoder_variables.items():
        if "encoder" in tree and "encoder" not in target_variables.get(collection, {}):
            raise ValueError(
                f"transfer_encoder: the target has no {collection}['encoder']"
            )
    result, report = copy_weights(
        target_variables,
        autoencoder_variables,
        {"encoder": "encoder"},
        source_name="the autoencoder",
    )
    if report.mismatched or report.missing or report.unused:
        raise ValueError(
            f"transfer_encoder: encoder shapes differ: mismatched {report.mismatched}, "
            f"missing in the autoencoder {report.missing}, unused {report.unused}"
        )
    return result


# Presets: tiny ones for tests, small ones for 64 x 64 phantoms.
autoencoder_tiny = partial(ConvAutoencoder, widths=(4, 8), latent=8)
autoencoder_small = partial(ConvAutoencoder, widths=(16, 32, 64), latent=32)
dense_autoencoder_tiny = partial(DenseAutoencoder, hidden=(32,), latent=8)
dense_autoencoder_small = partial(DenseAutoencoder, hidden=(512, 128), latent=32)
stacked_autoencoder_tiny = partial(StackedAutoencoder, hidden=(32, 16, 8))
stacked_autoencoder_small = partial(StackedAutoencoder, hidden=(512, 128, 32))
vae_tiny = partial(VAE, widths=(4, 8), latent=8)
vae_small = partial(VAE, widths=(16, 32, 64), latent=32)
# Classifiers on the encoders of autoencoder_tiny / autoencoder_small.
encoder_classifier_tiny = partial(EncoderClassifier, widths=(4, 8), latent=8)
encoder_classifier_small = partial(EncoderClassifier, widths=(16, 32, 64), latent=32)
