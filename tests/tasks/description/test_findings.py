"""Findings of hand-made lesion records: fields, words, tokens and back; the
jax gather equals the host encoder; scores on hand-computed examples."""

import jax.numpy as jnp
import numpy as np
import pytest

from medjax.tasks.description import FindingCoder
from medjax.tasks.description.scores import corpus_bleu4, description_scores

CODER = FindingCoder()  # 3 lesions, 10 mm bins from 10 to 70 mm, 12 tokens
SPACING = 6.25  # mm per pixel of the 64 x 64 phantoms

# types (torso.LESION_TYPES), radii in pixels, valid -> the words
RECORDS = [
    ([0, 0, 0], [0.0, 0.0, 0.0], [False, False, False], "no lesion"),
    # one hypodense liver lesion, radius 3.2 px: 2 * 3.2 * 6.25 = 40 mm
    (
        [1, 0, 0],
        [3.2, 0.0, 0.0],
        [True, False, False],
        "hypodense liver lesion , 40 mm",
    ),
    # the largest of two is the lung nodule (2.0 px: 25 mm rounds to 20, half to even)
    (
        [2, 3, 0],
        [1.0, 2.0, 0.0],
        [True, True, False],
        "lung nodule , 20 mm ; 2 lesions",
    ),
    # three lesions; an invalid row's big radius is ignored; 0.5 px = 6.25 mm -> 10 (min)
    (
        [2, 1, 3],
        [0.5, 0.3, 9.0],
        [True, True, False],
        "hyperdense liver lesion , 10 mm ; 2 lesions",
    ),
    # 7 px = 87.5 mm, clipped to 70
    (
        [1, 2, 3],
        [7.0, 1.0, 1.0],
        [True, True, True],
        "hypodense liver lesion , 70 mm ; 3 lesions",
    ),
]


def test_vocabulary_is_fixed_by_the_options():
    assert CODER.words[:3] == ("<pad>", "<bos>", "<eos>")
    assert CODER.vocab_size == 3 + 11 + 2 + 7 == 23
    assert CODER.sizes_mm == (10, 20, 30, 40, 50, 60, 70)
    with pytest.raises(ValueError, match="the longest finding needs 11 tokens"):
        FindingCoder(max_length=10)
    with pytest.raises(ValueError, match="multiples of the bin"):
        FindingCoder(min_size_mm=15)


@pytest.mark.parametrize("types, radii, valid, text", RECORDS)
def test_findings_round_trip_through_tokens(types, radii, valid, text):
    fields = [
        int(f)
        for f in CODER.fields_from_lesions(
            np.array(types), np.array(radii), np.array(valid), SPACING
        )
    ]
    words = CODER.finding_words(*fields)
    assert " ".join(words) == text
    tokens = CODER.encode(words)
    assert tokens.shape == (12,) and tokens[0] == CODER.bos_id
    assert tokens[len(words) + 1] == CODER.eos_id and not tokens[len(words) + 2 :].any()
    assert CODER.text(tokens) == text
    assert list(CODER.parse(CODER.decode_words(tokens))) == fields
    np.testing.assert_array_equal(CODER.token_table[tuple(fields)], tokens)


def test_the_jitted_gather_equals_the_host_encoder_for_a_batch():
    types, radii, valid, texts = (np.array(column) for column in zip(*RECORDS))
    fields = CODER.fields_from_lesions(
        jnp.asarray(types),
        jnp.asarray(radii, jnp.float32),
        jnp.asarray(valid),
        SPACING,
        xp=jnp,
    )
    tokens = np.asarray(jnp.asarray(CODER.token_table)[fields])
    assert [CODER.text(t) for t in tokens] == list(texts)


def test_malformed_words_parse_to_minus_one_where_they_break_the_grammar():
    assert CODER.parse(["lung", "nodule", ",", "20", "mm", ";", "2", "lesions"]) == (
        2,
        3,
        1,
    )
    assert CODER.parse(["lung", "nodule", ",", "25", "mm"]) == (1, 3, -1)  # no such bin
    assert CODER.parse(["lung", "nodule", ",", "20", "mm", ";", "7", "lesions"]) == (
        -1,
        3,
        1,
    )
    assert CODER.parse(["liver", "lesion"]) == (-1, -1, -1)
    assert CODER.parse(["hypodense", "liver", "lesion", "mm"]) == (-1, 1, -1)
    assert CODER.parse([]) == (-1, -1, -1)


def test_bleu4_matches_a_hand_computed_value():
    reference = ["hypodense", "liver", "lesion", ",", "40", "mm"]
    assert corpus_bleu4([reference], [reference]) == pytest.approx(1.0)
    # The fifth word wrong: 1-gram precision 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams
    # 1/3; the same length: no brevity penalty.
    hypothesis = ["hypodense", "liver", "lesion", ",", "50", "mm"]
    expected = np.exp(np.mean(np.log([5 / 6, 3 / 5, 2 / 4, 1 / 3])))
    assert corpus_bleu4([reference], [hypothesis]) == pytest.approx(expected, rel=1e-6)
    # The second and fifth words wrong: 4/6, 1/5 and no 3- or 4-gram matches, each
    # smoothed (method1, epsilon 0.1) to 0.1 / count: 0.1/4, 0.1/3.
    hypothesis = ["hypodense", "lung", "lesion", ",", "50", "mm"]
    expected = np.exp(np.mean(np.log([4 / 6, 1 / 5, 0.1 / 4, 0.1 / 3])))
    assert corpus_bleu4([reference], [hypothesis]) == pytest.approx(expected, rel=1e-6)


def test_description_scores_on_hand_made_findings():
    truth = [
        CODER.encode(w.split())
        for w in (
            "no lesion",
            "hypodense liver lesion , 40 mm",
            "lung nodule , 20 mm ; 2 lesions",
            "hyperdense liver lesion , 60 mm",
            "hypodense liver lesion , 10 mm",
        )
    ]
    said = [
        CODER.encode(w.split())
        for w in (
            "no lesion",  # all right
            "hypodense liver lesion , 50 mm",  # size one bin off
            "lung nodule , 20 mm",  # count wrong
            "liver lesion , 60 mm",  # unparseable kind
            "no lesion",
        )
    ]  # missed (states no size)
    result = description_scores(CODER, np.stack(truth), np.stack(said))
    assert result["exact_match"] == pytest.approx(1 / 5)
    assert result["count_accuracy"] == pytest.approx(2 / 5)  # the fourth parses to -1
    assert result["presence_accuracy"] == pytest.approx(3 / 5)
    assert result["type_accuracy"] == pytest.approx(2 / 4)  # over the 4 lesion slices
    assert result["size_accuracy"] == pytest.approx(1 / 4)
    assert result["size_within_one_bin"] == pytest.approx(2 / 4)
    assert result["well_formed"] == pytest.approx(4 / 5)
    assert 0 < result["bleu4"] < 1
