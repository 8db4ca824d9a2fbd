"""Restricted Boltzmann machines: Bernoulli-Bernoulli and Gaussian-Bernoulli.

Energy of a visible vector ``v [D]`` and a binary hidden vector ``h [H]`` with
weights ``W [D, H]``, visible bias ``b [D]`` and hidden bias ``c [H]``:

- Bernoulli visibles (``v`` in {0, 1}): ``E(v, h) = -b.v - c.h - v.W.h``;
- Gaussian visibles with unit variance (``v`` real, meant for standardised
  inputs): ``E(v, h) = |v - b|^2 / 2 - c.h - v.W.h``.

Summing out ``h`` gives the free energy ``F(v) = -log sum_h exp(-E(v, h))``:
``-b.v - sum_j softplus(c_j + (v.W)_j)`` (Bernoulli) or
``|v - b|^2 / 2 - sum_j softplus(c_j + (v.W)_j)`` (Gaussian), and
``p(h_j = 1 | v) = sigmoid(c_j + (v.W)_j)``; ``p(v | h)`` is Bernoulli with mean
``sigmoid(b + W.h)`` or Normal with mean ``b + W.h`` and unit variance.

Training (contrastive divergence) is a loss like any other: with ``train=True``
the module runs a Gibbs chain for ``cd_steps`` steps, from the data (CD-k) or from
a persistent chain kept in the ``batch_stats`` collection (PCD, Tieleman 2008),
and returns the free energies of the data and of the chain's end, behind
``stop_gradient``. The gradient of ``mean F(v_data) - mean F(v_model)`` is then
exactly the CD estimate of the negative log-likelihood gradient,
``<dE/dθ>_data - <dE/dθ>_model`` with the hidden units summed out
(``medjax.tasks.generative.RBMTask`` forms that loss). With one Gibbs step, a
persistent chain of ``batch_size`` particles and plain SGD this is the update
scikit-learn's ``BernoulliRBM`` makes.
"""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VISIBLE_KINDS = ("bernoulli", "gaussian")


class RBM(nn.Module):
    """A restricted Boltzmann machine on flattened inputs.

    Attributes:
        num_hidden: number of binary hidden units ``H``.
        visible: ``bernoulli`` (binary inputs) or ``gaussian`` (real inputs with
            unit variance: standardise them first).
        cd_steps: Gibbs steps ``k`` of the negative phase (CD-k / PCD-k).
        persistent: keep the negative chain across steps (PCD) in
            ``batch_stats/chain [num_chains, H]``, its hidden state; it starts
            from ``h ~ p(h | v)`` of the first training batch (rows repeated to
            ``num_chains``) and every training step advances it ``cd_steps``
            steps; ``batch_stats/chain_steps`` counts them.
        num_chains: particles of the persistent chain (PCD only).
        init_scale: standard deviation of the initial weights (Hinton's practical
            guide and scikit-learn use 0.01); biases start at zero.

    Parameters (``params``): ``kernel [D, H]``, ``visible_bias [D]``,
    ``hidden_bias [H]``.
    """

    num_hidden: int
    visible: str = "bernoulli"
    cd_steps: int = 1
    persistent: bool = False
    num_chains: int = 64
    init_scale: float = 0.01

    def __post_init__(self):
        if self.visible not in VISIBLE_KINDS:
            raise ValueError(
                f"model.visible: expected one of {VISIBLE_KINDS}, got {self.visible!r}"
            )
        for name in ("num_hidden", "cd_steps", "num_chains"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}: expected a positive integer, got {value!r}")
        super().__post_init__()

    # -- the energy model (need initialised params: use through ``apply(method=)``)

    def _weights(self):
        params = self.variables["params"]
        return params["kernel"], params["visible_bias"], params["hidden_bias"]

    def hidden_logits(self, v: jnp.ndarray) -> jnp.ndarray:
        """``c + v.W``: ``[B, H]`` for ``v [B, D]`` (or images, flattened)."""
        kernel, _, hidden_bias = self._weights()
        return _flatten(v) @ kernel + hidden_bias

    def free_energy(self, v: jnp.ndarray) -> jnp.ndarray:
        """``F(v) [B]`` for ``v [B, D]`` (or images ``[B, H, W, C]``, flattened)."""
        v = _flatten(v)
        _, visible_bias, _ = self._weights()
        hidden_term = jnp.sum(jax.nn.softplus(self.hidden_logits(v)), axis=-1)
        if self.visible == "bernoulli":
            return -v @ visible_bias - hidden_term
        return 0.5 * jnp.sum((v - visible_bias) ** 2, axis=-1) - hidden_term

    def hidden_probabilities(self, v: jnp.ndarray) -> jnp.ndarray:
        """``p(h = 1 | v) [B, H]``."""
        return jax.nn.sigmoid(self.hidden_logits(v))

    def visible_mean(self, h: jnp.ndarray) -> jnp.ndarray:
        """``E[v | h] [B, D]``: ``sigmoid(b + W.h)`` or ``b + W.h``."""
        kernel, visible_bias, _ = self._weights()
        pre = h @ kernel.T + visible_bias
        return jax.nn.sigmoid(pre) if self.visible == "bernoulli" else pre

    def sample_hidden(self, key: jax.Array, v: jnp.ndarray) -> jnp.ndarray:
        """A binary sample ``h ~ p(h | v)``, ``[B, H]`` float."""
        probabilities = self.hidden_probabilities(v)
        return jax.random.bernoulli(key, probabilities).astype(probabilities.dtype)

    def sample_visible(self, key: jax.Array, h: jnp.ndarray) -> jnp.ndarray:
        """A sample ``v ~ p(v | h)``, ``[B, D]``."""
        mean = self.visible_mean(h)
        if self.visible == "bernoulli":
            return jax.random.bernoulli(key, mean).astype(mean.dtype)
        return mean + jax.random.normal(key, mean.shape, mean.dtype)

    def gibbs(
        self, key: jax.Array, v: jnp.ndarray, steps: int, *, final_mean: bool = False
    ) -> jnp.ndarray:
        """``steps`` alternating Gibbs steps ``v -> h -> v`` from ``v [B, D]``.

        Args:
            key: PRNG key; step ``t`` uses ``fold_in(key, t)``.
            v: the chain's start (images are flattened).
            steps: number of full steps (0 returns ``v``).
            final_mean: return ``E[v | h]`` of the last step instead of a sample
                (smoother images for display).

        Returns:
            ``[B, D]``: the visible state after ``steps`` steps.
        """
        v = _flatten(v)
        if steps == 0:
            return v

        def step(t, state):
            hidden_key, visible_key = jax.random.split(jax.random.fold_in(key, t))
            return self.sample_visible(visible_key, self.sample_hidden(hidden_key, state))

        v = jax.lax.fori_loop(0, steps - 1, step, v)
        hidden_key, visible_key = jax.random.split(jax.random.fold_in(key, steps - 1))
        h = self.sample_hidden(hidden_key, v)
        return self.visible_mean(h) if final_mean else self.sample_visible(visible_key, h)

    def reconstruct(self, v: jnp.ndarray) -> jnp.ndarray:
        """Mean-field reconstruction ``E[v | h = p(h | v)]``, ``[B, D]``."""
        return self.visible_mean(self.hidden_probabilities(v))

    def pseudo_log_likelihood(self, v: jnp.ndarray, chunk_size: int = 128) -> jnp.ndarray:
        """Exact pseudo-log-likelihood of binary ``v [B, D]``, ``[B]``:
        ``sum_i log p(v_i | v_-i) = sum_i log sigmoid(F(v^(i)) - F(v))`` where
        ``v^(i)`` is ``v`` with bit ``i`` flipped (Bernoulli visibles only).

        scikit-learn's ``BernoulliRBM.score_samples`` returns ``D`` times one
        randomly chosen term of this sum: an unbiased estimate of this value.
        Flipping bit ``i`` moves the hidden logits by ``(1 - 2 v_i) W_i``, so all
        ``D`` flips cost ``O(D H)`` per example; visible units are taken
        ``chunk_size`` at a time to bound memory at ``B x chunk_size x H``.
        """
        if self.visible != "bernoulli":
            raise ValueError("pseudo_log_likelihood: defined here for Bernoulli visibles only")
        v = _flatten(v)
        kernel, visible_bias, _ = self._weights()
        logits = self.hidden_logits(v)  # [B, H]
        base = jnp.sum(jax.nn.softplus(logits), axis=-1)  # [B]
        sign = 1.0 - 2.0 * v  # +1 where a 0 flips to 1, -1 where a 1 flips to 0
        num_visible = v.shape[-1]
        chunk = min(chunk_size, num_visible)
        padded = -(-num_visible // chunk) * chunk
        pad = padded - num_visible
        sign_chunks = jnp.pad(sign, ((0, 0), (0, pad))).reshape(v.shape[0], -1, chunk)
        kernel_chunks = jnp.pad(kernel, ((0, pad), (0, 0))).reshape(-1, chunk, kernel.shape[1])
        bias_chunks = jnp.pad(visible_bias, (0, pad)).reshape(-1, chunk)

        def chunk_terms(args):
            s, w, b = args  # [B, C], [C, H], [C]
            flipped = jnp.sum(jax.nn.softplus(logits[:, None, :] + s[..., None] * w), -1)
            delta = -s * b - (flipped - base[:, None])  # F(v^(i)) - F(v), [B, C]
            return jax.nn.log_sigmoid(delta)

        terms = jax.lax.map(
            chunk_terms, (jnp.moveaxis(sign_chunks, 1, 0), kernel_chunks, bias_chunks)
        )  # [num_chunks, B, C]
        terms = jnp.moveaxis(terms, 0, 1).reshape(v.shape[0], padded)[:, :num_visible]
        return jnp.sum(terms, axis=-1)

    # -- the module as the training engine sees it

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> dict[str, jnp.ndarray]:
        """The outputs ``medjax.tasks.generative.RBMTask`` turns into a loss.

        Args:
            x: ``[B, ...]`` inputs (images are flattened to ``[B, D]``), binary for
                Bernoulli visibles.
            train: run the negative-phase Gibbs chain (needs the ``sample`` rng);
                without it the module is deterministic.

        Returns:
            ``free_energy [B]`` of the data; ``free_energy_model [N]``: with
            ``train``, of the negative chain's end (``N = B``, or ``num_chains``
            when persistent) behind ``stop_gradient``; without, of the mean-field
            reconstruction (``N = B``), a deterministic stand-in for CD-1 in
            evaluation; ``reconstruction [B, D]``, the mean-field reconstruction
            (no gradient); and without ``train`` and with Bernoulli visibles,
            ``pseudo_log_likelihood [B]``.
        """
        v = _flatten(x)
        num_visible = v.shape[-1]
        self.param(
            "kernel", nn.initializers.normal(self.init_scale), (num_visible, self.num_hidden)
        )
        self.param("visible_bias", nn.initializers.zeros, (num_visible,))
        self.param("hidden_bias", nn.initializers.zeros, (self.num_hidden,))
        if self.persistent:
            chain = self.variable(
                "batch_stats", "chain", jnp.zeros, (self.num_chains, self.num_hidden), v.dtype
            )
            chain_steps = self.variable("batch_stats", "chain_steps", jnp.zeros, (), jnp.int32)

        if self.is_initializing():  # only the variables matter: skip the work
            return {"free_energy": self.free_energy(v)}
        reconstruction = jax.lax.stop_gradient(self.reconstruct(v))
        outputs = {"free_energy": self.free_energy(v), "reconstruction": reconstruction}
        if not train:
            outputs["free_energy_model"] = self.free_energy(reconstruction)
            if self.visible == "bernoulli":
                outputs["pseudo_log_likelihood"] = self.pseudo_log_likelihood(v)
            return outputs

        start_key, visible_key, chain_key, next_key = jax.random.split(self.make_rng("sample"), 4)
        v = jax.lax.stop_gradient(v)
        if self.persistent:
            from_data = self.sample_hidden(start_key, v[jnp.arange(self.num_chains) % v.shape[0]])
            h = jnp.where(chain_steps.value > 0, chain.value, from_data)
        else:
            h = self.sample_hidden(start_key, v)
        # k steps h -> v (-> h -> v ...): v_model ~ p(v | h) at the end.
        v_model = self.gibbs(chain_key, self.sample_visible(visible_key, h), self.cd_steps - 1)
        v_model = jax.lax.stop_gradient(v_model)
        if self.persistent and not self.is_initializing():
            # The chain keeps a hidden sample drawn with the weights of this step,
            # before the update (as scikit-learn's BernoulliRBM does).
            chain.value = jax.lax.stop_gradient(self.sample_hidden(next_key, v_model))
            chain_steps.value = chain_steps.value + self.cd_steps
        outputs["free_energy_model"] = self.free_energy(v_model)
        return outputs


def _flatten(x: jnp.ndarray) -> jnp.ndarray:
    x = jnp.asarray(x)
    if x.ndim == 1:
        raise ValueError(f"RBM: expected a batch [B, ...], got shape {x.shape}")
    return x.reshape((x.shape[0], -1)).astype(jnp.promote_types(x.dtype, jnp.float32))


def draw_samples(
    model: RBM,
    variables,
    key: jax.Array,
    num: int,
    steps: int,
    image_shape: tuple[int, ...] | None = None,
    start: jnp.ndarray | None = None,
) -> np.ndarray:
    """Samples of a trained RBM by block Gibbs sampling.

    Args:
        model: the module; ``variables`` its ``{"params": ...}``.
        key: PRNG key.
        num: number of independent chains.
        steps: Gibbs steps per chain (more mixes better; hundreds to thousands).
        image_shape: reshape each sample to this (e.g. ``(32, 32, 1)``).
        start: ``[num, D]`` (or images) to start from; default: noise (Bernoulli(1/2)
            or standard normal).

    Returns:
        ``[num, *image_shape]`` (or ``[num, D]``) host array: ``E[v | h]`` of the
        last step, which shows better than a binary sample.
    """
    num_visible = variables["params"]["visible_bias"].shape[0]
    start_key, chain_key = jax.random.split(key)
    if start is None:
        if model.visible == "bernoulli":
            start = jax.random.bernoulli(start_key, 0.5, (num, num_visible)).astype(jnp.float32)
        else:
            start = jax.random.normal(start_key, (num, num_visible))
    run = jax.jit(
        lambda variables, key, start: model.apply(
            variables, key, start, steps, final_mean=True, method=RBM.gibbs
        )
    )
    samples = np.asarray(run({"params": variables["params"]}, chain_key, start))
    return samples.reshape((num, *image_shape)) if image_shape else samples


rbm_tiny = partial(RBM, num_hidden=8)
rbm_small = partial(RBM, num_hidden=128)
rbm_pcd = partial(RBM, num_hidden=128, persistent=True)
gaussian_rbm_small = partial(RBM, num_hidden=128, visible="gaussian")
