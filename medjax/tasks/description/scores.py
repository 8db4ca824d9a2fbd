"""Scores of generated findings against the true ones, over a split (host)."""

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

from medjax.tasks.description.findings import FindingCoder


def corpus_bleu4(references: list[list[str]], hypotheses: list[list[str]]) -> float:
    """Corpus BLEU-4 (uniform weights over 1- to 4-grams, one reference per
    hypothesis) with NLTK's smoothing ``method1`` (epsilon counts for n-gram
    orders without a match: ``no lesion`` has no 4-gram), in [0, 1]."""
    return float(
        corpus_bleu(
            [[reference] for reference in references],
            hypotheses,
            smoothing_function=SmoothingFunction().method1,
        )
    )


def description_scores(
    coder: FindingCoder, truth: np.ndarray, generated: np.ndarray
) -> dict[str, float]:
    """Per-field and whole-finding exact match, and corpus BLEU-4.

    Args:
        coder: the findings' vocabulary and grammar.
        truth: ``[N, L]`` true tokens.
        generated: ``[N, L]`` generated tokens.

    Returns:
        ``exact_match`` (the same words), ``presence_accuracy``, ``count_accuracy``
        (all slices); ``type_accuracy``, ``size_accuracy``, ``size_within_one_bin``
        (slices that truly hold a lesion; NaN if none does); ``bleu4``;
        ``well_formed`` (the generated words parse in every field).
    """
    true_words = [coder.decode_words(t) for t in truth]
    said_words = [coder.decode_words(t) for t in generated]
    true_fields = np.array([coder.parse(w) for w in true_words]).reshape(-1, 3)
    said_fields = np.array([coder.parse(w) for w in said_words]).reshape(-1, 3)
    (count, kind, size), (said_count, said_kind, said_size) = (
        true_fields.T,
        said_fields.T,
    )
    lesion = count > 0
    said_size = np.where(said_count == 0, -1, said_size)  # "no lesion" states no size
    said_presence = np.where(
        said_count >= 0, said_count > 0, kind == 0
    )  # unparsed: wrong

    def over_lesions(right: np.ndarray) -> float:
        return float(np.mean(right[lesion])) if lesion.any() else float("nan")

    return {
        "exact_match": float(np.mean([a == b for a, b in zip(true_words, said_words)])),
        "presence_accuracy": float(np.mean(said_presence == lesion)),
        "count_accuracy": float(np.mean(said_count == count)),
        "type_accuracy": over_lesions(said_kind == kind),
        "size_accuracy": over_lesions(said_size == size),
        "size_within_one_bin": over_lesions(
            (said_size >= 0) & (np.abs(said_size - size) <= 1)
        ),
        "bleu4": corpus_bleu4(true_words, said_words),
        "well_formed": float(np.mean((said_fields >= 0).all(-1))),
    }
