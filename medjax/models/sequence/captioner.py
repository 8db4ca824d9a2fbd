"""Image captioning: a 2D CNN encoder and an LSTM decoder over token embeddings.

:class:`Captioner` encodes an image with a medjax
:class:`~medjax.models.cnn.ConvBackbone` to a vector ``[B, F]`` that sets the
decoder's initial LSTM state (``image_input="initial_state"``, Show and Tell,
Vinyals et al. 2015) or is concatenated to the token embedding at every step
(``"every_step"``). ``__call__(image, tokens)`` is teacher forcing: the logits
of the next token after each prefix, ``[B, L, V]``, causal by construction (an
``nn.RNN`` of ``OptimizedLSTMCell`` reads the tokens left to right).

Decoding (:meth:`Captioner.generate`, and the pure :func:`greedy_search` and
:func:`beam_search` it calls) runs a ``lax.scan`` of fixed length
``max_length - 1`` steps after ``<bos>``, so it jit-compiles to one program
whatever is generated. A sequence stops at ``<eos>``: every later position is
``<pad>`` and adds nothing to its score; before it, ``<bos>`` and ``<pad>`` are
never chosen. One that reaches the last step
without ``<eos>`` is returned cut short (no ``<eos>``). Beam scores are summed
log-probabilities; the final choice divides them by ``length **
length_penalty`` (0 by default: raw sums, which favour short findings); the
best finished sequence is kept aside so it is never pruned.

The engine applies a model to one argument, so ``__call__`` also takes the pair
``(image, tokens)`` as its first argument, and ``(image, Decoding(...))``
decodes instead of teacher forcing (how the description task's evaluation
reaches ``generate`` through the engine's ``apply``).
"""

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.models.cnn import OptionalBackboneTransfer, backbone_like

IMAGE_INPUTS = ("initial_state", "every_step")
STRATEGIES = ("greedy", "beam")

#: ``step(carry, token [N]) -> (carry, log_probs [N, V])``: one decoder step.
StepFn = Callable


@dataclasses.dataclass(frozen=True)
class Decoding:
    """A request to decode: ``strategy`` 'greedy' or 'beam' (``beam_width``,
    ``length_penalty``: see :func:`beam_search`)."""

    strategy: str = "greedy"
    beam_width: int = 3
    length_penalty: float = 0.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"decoding: expected one of {STRATEGIES}, got {self.strategy!r}"
            )
        if self.beam_width < 1:
            raise ValueError(f"beam_width: expected >= 1, got {self.beam_width}")


def _forbid_special(log_probs: jnp.ndarray, bos: int, pad: int) -> jnp.ndarray:
    """An open sequence never continues with ``<bos>`` or ``<pad>``."""
    return log_probs.at[..., jnp.array([bos, pad])].set(-jnp.inf)


def greedy_search(
    step: StepFn, carry, batch: int, max_length: int, *, bos: int, eos: int, pad: int
):
    """The most likely next token at every step.

    Args:
        step: one decoder step (see ``StepFn``); ``carry`` its initial state for
            ``batch`` sequences.
        max_length: tokens of the result, ``<bos>`` included.

    Returns:
        ``tokens [batch, max_length]`` (``<bos>`` first, ``<pad>`` after
        ``<eos>``) and their summed log-probabilities ``[batch]``.
    """
    first = jnp.full((batch,), bos, jnp.int32)

    def one_step(state, _):
        carry, token, done, score = state
        carry, log_probs = step(carry, token)
        log_probs = _forbid_special(log_probs, bos, pad)
        chosen = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        picked = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        chosen = jnp.where(done, pad, chosen)
        score = score + jnp.where(done, 0.0, picked)
        return (carry, chosen, done | (chosen == eos), score), chosen

    init = (carry, first, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32))
    (_, _, _, score), tokens = jax.lax.scan(one_step, init, None, length=max_length - 1)
    return jnp.concatenate([first[:, None], tokens.T], axis=1), score


def beam_search(
    step: StepFn,
    carry,
    batch: int,
    max_length: int,
    beam_width: int,
    *,
    bos: int,
    eos: int,
    pad: int,
    length_penalty: float = 0.0,
):
    """The ``beam_width`` best prefixes kept at every step; the best at the end.

    ``carry`` is the initial state of ``batch`` sequences; each is repeated for
    the beams (leaves ``[batch, ...] -> [batch * beam_width, ...]``). A finished
    beam (it emitted ``<eos>``) extends only by ``<pad>`` at no cost, so it keeps
    its score and competes with the open ones; the best sequence that finished
    inside the beam is also kept aside, so open prefixes that score higher for a
    while and then fall cannot push it out. The result is the best of it and the
    beams left at the last step (those may be cut short, without ``<eos>``). At
    the first step only one beam is live (the others start at -inf), so no prefix
    is kept twice. With ``beam_width=1`` this is :func:`greedy_search`.

    Beams are pruned by their summed log-probabilities; the final choice (and
    which finished sequence is kept aside) ranks ``score / length **
    length_penalty``, ``length`` the tokens after ``<bos>`` (``<eos>``
    included): 0 ranks raw sums, which favour short findings (``no lesion``);
    1 ranks the mean log-probability per token.

    Returns:
        ``tokens [batch, max_length]`` and the summed log-probabilities ``[batch]``
        of the best sequence.
    """
    width = beam_width
    carry = jax.tree.map(lambda x: jnp.repeat(x, width, axis=0), carry)
    tokens = jnp.full((batch, width, max_length), pad, jnp.int32).at[:, :, 0].set(bos)
    scores = jnp.tile(jnp.where(jnp.arange(width) == 0, 0.0, -jnp.inf), (batch, 1))
    done = jnp.zeros((batch, width), bool)
    # The best finished so far: tokens, summed log-probability, rank value.
    kept = (tokens[:, 0], jnp.full((batch,), -jnp.inf), jnp.full((batch,), -jnp.inf))

    def rank(score, length):
        return score / jnp.asarray(length, jnp.float32) ** length_penalty

    def one_step(state, position):
        carry, tokens, scores, done, kept = state
        last = jnp.take_along_axis(tokens, (position - 1)[None, None, None], axis=2)
        carry, log_probs = step(carry, last.reshape(batch * width))
        vocab = log_probs.shape[-1]
        log_probs = _forbid_special(log_probs, bos, pad).reshape(batch, width, vocab)
        # A finished beam's only continuation is <pad>, free.
        finished = jnp.where(jnp.arange(vocab) == pad, 0.0, -jnp.inf)
        log_probs = jnp.where(done[..., None], finished, log_probs)
        candidates = (scores[..., None] + log_probs).reshape(batch, width * vocab)
        scores, best = jax.lax.top_k(candidates, width)
        beam, token = best // vocab, (best % vocab).astype(jnp.int32)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1)
        tokens = tokens.at[:, :, position].set(token)
        done = jnp.take_along_axis(done, beam, axis=1)
        ended = (token == eos) & ~done  # finished at this step
        done = done | ended
        ended_scores = jnp.where(ended, scores, -jnp.inf)
        top = jnp.argmax(ended_scores, axis=1)
        top_score = jnp.take_along_axis(ended_scores, top[:, None], axis=1)[:, 0]
        top_tokens = jnp.take_along_axis(tokens, top[:, None, None], axis=1)[:, 0]
        top_rank = rank(top_score, position)
        better = top_rank > kept[2]
        kept = (
            jnp.where(better[:, None], top_tokens, kept[0]),
            jnp.where(better, top_score, kept[1]),
            jnp.where(better, top_rank, kept[2]),
        )
        rows = (jnp.arange(batch)[:, None] * width + beam).reshape(-1)
        carry = jax.tree.map(lambda x: x[rows], carry)
        return (carry, tokens, scores, done, kept), None

    state = (carry, tokens, scores, done, kept)
    (_, tokens, scores, done, kept), _ = jax.lax.scan(
        one_step, state, jnp.arange(1, max_length)
    )
    # Beams still open at the end, cut short (the finished ones are in kept).
    open_scores = jnp.where(done, -jnp.inf, scores)
    best = jnp.argmax(open_scores, axis=1)
    final_tokens = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    final_score = jnp.take_along_axis(open_scores, best[:, None], axis=1)[:, 0]
    use_kept = kept[2] >= rank(final_score, max_length - 1)
    return (
        jnp.where(use_kept[:, None], kept[0], final_tokens),
        jnp.where(use_kept, kept[1], final_score),
    )


class Captioner(nn.Module, OptionalBackboneTransfer):
    """CNN encoder, LSTM decoder over a small vocabulary.

    Attributes:
        vocab_size: tokens of the vocabulary (the task's).
        max_length: tokens of a generated sequence, ``<bos>`` included.
        bos_id, eos_id, pad_id: the special tokens' ids.
        embed_dim: width of the token embeddings.
        features: LSTM state width.
        image_input: 'initial_state' (the image vector sets the LSTM's initial
            ``(c, h)`` through a dense layer each) or 'every_step' (the image
            vector is concatenated to every step's token embedding; the state
            starts at zero).
        backbone: a medjax 2D feature extractor ``[B, H, W, C] -> [B, F]`` called
            as ``backbone(x, train=...)``; None builds a ``ConvBackbone`` from the
            fields below (laid out like a ``CNNClassifier``'s ``backbone``, so a
            2D classifier's backbone transfers).
        widths, blocks_per_stage, residual, norm, norm_momentum, stem,
            frozen_stages, activation, conv_impl, global_pool: of the default
            backbone.
        dropout_rate: dropout on the image vector and the LSTM outputs.

    Parameter names: ``backbone``, ``image_to_c``/``image_to_h`` (initial
    state), ``embed``, ``decoder`` (the ``nn.RNN``; its cell ``decoder/cell``),
    ``readout``.
    """

    vocab_size: int
    max_length: int = 12
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0
    embed_dim: int = 32
    features: int = 64
    image_input: str = "initial_state"
    backbone: nn.Module | None = None
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int | Sequence[int] = 1
    residual: bool = False
    norm: str = "batch"
    norm_momentum: float = 0.99
    stem: str = "small"
    frozen_stages: int = 0
    activation: str = "relu"
    conv_impl: str = "xla"
    global_pool: str = "mean"
    dropout_rate: float = 0.0

    def setup(self):
        if self.image_input not in IMAGE_INPUTS:
            raise ValueError(
                f"model.image_input: expected one of {IMAGE_INPUTS}, "
                f"got {self.image_input!r}"
            )
        if self.backbone is None:  # else the given module, adopted as `backbone`
            self.default_backbone = backbone_like(self, spatial_dims=2)
        if self.image_input == "initial_state":
            self.image_to_c = nn.Dense(self.features, name="image_to_c")
            self.image_to_h = nn.Dense(self.features, name="image_to_h")
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
        self.decoder = nn.RNN(nn.OptimizedLSTMCell(self.features), name="decoder")
        self.readout = nn.Dense(self.vocab_size, name="readout")
        self.dropout = nn.Dropout(self.dropout_rate)

    def encode(self, image: jnp.ndarray, *, train: bool = False):
        """The image vector ``[B, F]`` and the decoder's initial LSTM carry
        ``(c, h)``, each ``[B, features]``."""
        if image.ndim != 4:
            raise ValueError(
                f"Captioner expects images [batch, height, width, channels], "
                f"got shape {image.shape}"
            )
        encoder = self.backbone if self.backbone is not None else self.default_backbone
        vector = self.dropout(encoder(image, train=train), deterministic=not train)
        if self.image_input == "initial_state":
            carry = (
                jnp.tanh(self.image_to_c(vector)),
                jnp.tanh(self.image_to_h(vector)),
            )
        else:
            zeros = jnp.zeros((image.shape[0], self.features), vector.dtype)
            carry = (zeros, zeros)
        return vector, carry

    def _step_inputs(self, embedded, vector):
        """Token embeddings ``[B, L, E]`` (or one step's ``[B, E]``), with the
        image vector ``[B, F]`` appended to each step when ``every_step``."""
        if self.image_input != "every_step":
            return embedded
        if embedded.ndim == 3:
            vector = jnp.broadcast_to(
                vector[:, None], embedded.shape[:2] + vector.shape[-1:]
            )
        return jnp.concatenate([embedded, vector], axis=-1)

    def __call__(self, image, tokens=None, *, train: bool = False):
        """Teacher forcing: ``image [B, H, W, C]`` and input ``tokens [B, L]``
        (``<bos>`` first) to next-token logits ``[B, L, V]``; logits at step
        ``t`` see tokens ``0..t`` only. ``image`` may be the pair ``(image,
        tokens)``; with ``(image, Decoding(...))`` returns :meth:`generate`'s
        ``{"tokens", "log_prob"}`` instead."""
        if tokens is None and isinstance(image, (tuple, list)):
            image, tokens = image
        if isinstance(tokens, Decoding):
            return self.generate(image, tokens)
        vector, carry = self.encode(image, train=train)
        inputs = self._step_inputs(self.embed(tokens), vector)
        outputs = self.decoder(inputs, initial_carry=carry)
        outputs = self.dropout(outputs, deterministic=not train)
        return self.readout(outputs)

    def generate(self, image: jnp.ndarray, decoding: Decoding = Decoding()):
        """Decoded ``tokens [B, max_length]`` (``<bos>`` first, ``<pad>`` after
        ``<eos>``) and their summed ``log_prob [B]``, greedy or by beam search
        (see the module docstring), in inference mode."""
        vector, carry = self.encode(image, train=False)
        # Pure functions of this module's parameters, so lax.scan can run them.
        params = self.variables["params"]
        cell = nn.OptimizedLSTMCell(self.features, parent=None)
        cell_params = {"params": params["decoder"]["cell"]}
        table = params["embed"]["embedding"]
        readout = {"params": params["readout"]}
        dense = nn.Dense(self.vocab_size, parent=None)

        def step(state, token):
            carry, vector = state
            inputs = self._step_inputs(table[token], vector)
            carry, output = cell.apply(cell_params, carry, inputs)
            logits = dense.apply(readout, output)
            return (carry, vector), jax.nn.log_softmax(logits.astype(jnp.float32))

        special = {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id}
        batch = image.shape[0]
        if decoding.strategy == "greedy":
            tokens, score = greedy_search(
                step, (carry, vector), batch, self.max_length, **special
            )
        else:
            tokens, score = beam_search(
                step,
                (carry, vector),
                batch,
                self.max_length,
                decoding.beam_width,
                length_penalty=decoding.length_penalty,
                **special,
            )
        return {"tokens": tokens, "log_prob": score}


captioner_tiny = partial(Captioner, widths=(4, 8), embed_dim=8, features=8)
captioner_small = partial(
    Captioner, widths=(16, 32, 64), embed_dim=32, features=64, dropout_rate=0.1
)
