"""The captioner: teacher forcing is causal, decoding agrees with teacher
forcing, beam search of width 1 is greedy, and beam search finds the likelier
finding where greedy is myopic."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.sequence.captioner import (
    Decoding,
    beam_search,
    captioner_tiny,
    greedy_search,
)
from medjax.runtime import random_key

PAD, BOS, EOS, A, B = range(5)


def markov_step(table):
    """A decoder whose next-token probabilities depend on the last token only:
    ``table[last] [V]``; the carry counts steps (unused)."""
    log_table = jnp.log(jnp.asarray(table, jnp.float32))

    def step(carry, token):
        return carry + 1, log_table[token]

    return step


# From <bos>: A 0.6, B 0.4. After A the mass spreads (eos 0.3, A 0.35, B 0.35);
# after B, <eos> is certain. Greedy takes A and ends at best with 0.6 * 0.35 *
# ...; the best finding is "B <eos>", 0.4.
MYOPIC = np.full((5, 5), 1e-9)
MYOPIC[BOS, [A, B]] = [0.6, 0.4]
MYOPIC[A, [EOS, A, B]] = [0.3, 0.35, 0.35]
MYOPIC[B, EOS] = 1.0
MYOPIC[EOS, EOS] = 1.0
MYOPIC /= MYOPIC.sum(1, keepdims=True)
SPECIAL = {"bos": BOS, "eos": EOS, "pad": PAD}


def jitted(search, step, carry, *args, **options):
    """``search(step, carry, *args, **options)`` as one compiled program (faster
    than dispatching its many small operations one by one)."""
    return jax.jit(lambda carry: search(step, carry, *args, **options))(carry)


def test_beam_search_beats_myopic_greedy_on_a_hand_built_decoder():
    step, carry = markov_step(MYOPIC), jnp.zeros((1,), jnp.int32)
    greedy, greedy_score = jitted(greedy_search, step, carry, 1, 6, **SPECIAL)
    # Greedy: A (0.6), then A or B (0.35, argmax takes the first: A), ...
    assert greedy[0, :3].tolist() == [BOS, A, A]
    beam, beam_score = jitted(beam_search, step, carry, 1, 6, 2, **SPECIAL)
    assert beam[0].tolist() == [BOS, B, EOS, PAD, PAD, PAD]
    assert float(beam_score[0]) == pytest.approx(np.log(0.4), abs=1e-5)
    assert float(beam_score[0]) > float(greedy_score[0])
    # Width 1 is greedy, tokens and score.
    # A wider beam keeps the best finished sequence however long it runs.
    wide, wide_score = jitted(beam_search, step, carry, 1, 6, 4, **SPECIAL)
    assert wide[0, :3].tolist() == [BOS, B, EOS] and float(
        wide_score[0]
    ) == pytest.approx(float(beam_score[0]), abs=1e-6)
    one, one_score = jitted(beam_search, step, carry, 1, 6, 1, **SPECIAL)
    np.testing.assert_array_equal(one, greedy)
    np.testing.assert_allclose(one_score, greedy_score, rtol=1e-6)


def test_length_penalty_ranks_findings_by_mean_log_probability():
    # By position: <bos> -> A 0.7 (then <eos> 0.87) or B 0.3, then B B B B <eos>
    # almost surely. "A <eos>" sums to -0.50 (-0.25 a token); "B B B B B <eos>"
    # to -1.20 (-0.20 a token).
    table = np.full((7, 5, 5), 1e-6)
    table[0, BOS, [A, B]] = [0.7, 0.3]
    table[1, A, [EOS, A, B]] = [0.87, 0.065, 0.065]
    table[1:5, B, B] = 0.999
    table[5, B, EOS] = 0.999
    table[:, EOS, EOS] = 1.0
    log_table = jnp.log(jnp.asarray(table / table.sum(-1, keepdims=True), jnp.float32))

    def step(position, token):
        return position + 1, log_table[position, token]

    start = jnp.zeros((1,), jnp.int32)
    raw, raw_score = jitted(beam_search, step, start, 1, 8, 2, **SPECIAL)
    assert raw[0, :3].tolist() == [BOS, A, EOS]
    assert float(raw_score[0]) == pytest.approx(np.log(0.7 * 0.87), abs=1e-4)
    mean, mean_score = jitted(
        beam_search, step, start, 1, 8, 2, length_penalty=1.0, **SPECIAL
    )
    assert mean[0, :7].tolist() == [BOS, B, B, B, B, B, EOS]
    path = [BOS, B, B, B, B, B, EOS]
    expected = sum(float(log_table[t, path[t], path[t + 1]]) for t in range(6))
    assert float(mean_score[0]) == pytest.approx(expected, abs=1e-5)


def random_variables(model, *inputs):
    """Variables of ``model``'s shapes, drawn at random (its init is slow to run
    and the properties tested hold for any weights): parameters N(0, 0.5^2),
    BatchNorm statistics mean 0, variance 1."""
    shapes = jax.eval_shape(partial(model.init, train=False), random_key(0), inputs)
    # numpy draws: one jax.random call per shape would compile once per shape.
    rng = np.random.default_rng(3)
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    drawn = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if "batch_stats" in name:
            drawn.append(np.full(leaf.shape, "var" in name, leaf.dtype))
        else:
            drawn.append(0.5 * rng.standard_normal(leaf.shape).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(x) for x in drawn])


@pytest.fixture(scope="module")
def tiny():
    """A tiny captioner, its variables, and jitted teacher forcing and decoding
    shared by the tests (one compile each). Input tokens are ``max_length - 1``
    long, the length teacher forcing on a decoded finding has."""
    model = captioner_tiny(vocab_size=9, max_length=5)
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.standard_normal((2, 8, 8, 1)), jnp.float32)
    tokens = jnp.asarray(rng.integers(3, 9, (2, 4)), jnp.int32)
    tokens = tokens.at[:, 0].set(BOS)
    variables = random_variables(model, image, tokens)
    teacher = jax.jit(lambda image, tokens: model.apply(variables, image, tokens))
    decode = jax.jit(
        lambda image, decoding: model.apply(variables, (image, decoding)),
        static_argnums=1,
    )
    return teacher, decode, image, tokens


def test_teacher_forced_logits_at_step_t_do_not_see_later_tokens(tiny):
    teacher, _, image, tokens = tiny
    logits = teacher(image, tokens)
    assert logits.shape == (2, 4, 9)
    changed = tokens.at[:, 2:].set(jnp.where(tokens[:, 2:] == 4, 5, 4))
    later = teacher(image, changed)
    np.testing.assert_allclose(later[:, :2], logits[:, :2], rtol=1e-6)
    assert not np.allclose(later[:, 2:], logits[:, 2:])  # the later steps do see them


def test_decoding_agrees_with_teacher_forcing_and_width_one_is_greedy(tiny):
    teacher, decode, image, _ = tiny
    greedy = decode(image, Decoding("greedy"))
    tokens = greedy["tokens"]
    assert tokens.shape == (2, 5) and (tokens[:, 0] == BOS).all()
    # Teacher forcing on the greedy tokens gives back the same choices and scores.
    log_probs = jax.nn.log_softmax(teacher(image, tokens[:, :-1]))
    allowed = log_probs.at[..., jnp.array([BOS, PAD])].set(-jnp.inf)
    open_steps = jnp.cumsum(tokens[:, :-1] == EOS, axis=1) == 0  # before <eos>
    np.testing.assert_array_equal(
        jnp.where(open_steps, allowed.argmax(-1), PAD), tokens[:, 1:]
    )
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(
        jnp.where(open_steps, picked, 0).sum(-1), greedy["log_prob"], rtol=1e-5
    )
    beam1 = decode(image, Decoding("beam", 1))
    np.testing.assert_array_equal(beam1["tokens"], tokens)
    # Width 3 returns the tokens whose teacher-forced score it reports. (Not
    # necessarily above greedy's: a wider beam can prune the greedy prefix early.)
    beam3 = decode(image, Decoding("beam", 3))
    tokens = beam3["tokens"]
    log_probs = jax.nn.log_softmax(teacher(image, tokens[:, :-1]))
    open_steps = jnp.cumsum(tokens[:, :-1] == EOS, axis=1) == 0
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(
        jnp.where(open_steps, picked, 0).sum(-1), beam3["log_prob"], rtol=1e-5
    )


def test_every_step_conditioning_and_bad_options():
    model = captioner_tiny(vocab_size=9, max_length=3, image_input="every_step")
    image, tokens = jnp.ones((2, 8, 8, 1)), jnp.ones((2, 2), jnp.int32)
    variables = random_variables(model, image, tokens)
    assert "image_to_c" not in variables["params"]
    # The LSTM reads the embedding (8) and the image vector (8) at every step.
    assert variables["params"]["decoder"]["cell"]["ii"]["kernel"].shape == (16, 8)
    decode = jax.jit(lambda v, image: model.apply(v, (image, Decoding("beam", 2))))
    assert decode(variables, image)["tokens"].shape == (2, 3)
    with pytest.raises(ValueError, match="decoding: expected one of"):
        Decoding("sample")
    with pytest.raises(ValueError, match="model.image_input"):
        jax.eval_shape(
            captioner_tiny(vocab_size=9, image_input="cross_attention").init,
            random_key(0),
            (image, tokens),
        )


def test_parameter_groups_name_the_backbone_stages_of_an_unbound_model():
    # Transfer (finetune) asks an unbound model; building a module there failed.
    model = captioner_tiny(vocab_size=9)
    (backbone,) = model.parameter_groups().backbones
    assert backbone.stages == (
        ("backbone/stem_conv", "backbone/stem_norm", "backbone/stage0_block0"),
        ("backbone/stage1_block0",),
    )
    shapes = jax.eval_shape(
        model.init, random_key(0), (jnp.ones((1, 8, 8, 1)), jnp.ones((1, 2), int))
    )
    for stage in backbone.stages:
        for path in stage:
            first, second = path.split("/")
            assert second in shapes["params"][first], path
