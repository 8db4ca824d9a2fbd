"""Synthetic memory tasks for recurrent networks: the "distant cue" sequences of the
vanishing-gradient ablation (``experiments/sequences/vanishing_gradient``).

A sequence has ``T`` frames of ``F = num_classes + 1`` features. Every frame holds
a symbol, one of ``num_classes``, written one-hot into its first ``num_classes``
features (plus optional Gaussian noise). The label of the sequence is the symbol
of one frame, the *cue* at index ``T - distance``, so ``distance - 1`` frames
follow it (``distance = 1`` would be the last frame). Every other frame, before
and after the cue, is a distractor whose symbol is drawn uniformly and
independently of the label: the symbol features of a distractor have exactly the
distribution of the cue frame's had its label been drawn again. The last
feature is a marker, 1 on the cue frame and 0 elsewhere: it says *where* the
cue is, never *what* it is, so that the task measures memory rather than
counting. A network that reads only the frames after the cue is at chance,
``1 / num_classes``; to do better it must carry the cue's symbol ``distance``
steps to the end.

This is the marker variant of Hochreiter and Schmidhuber's (1997) long-lag
tasks; with a fixed ``T`` the cue sits ``T - distance`` frames after the start,
so every distance sees sequences of the same length.
"""

import numpy as np


def distant_cue_sequences(
    num_sequences: int,
    *,
    distance: int,
    length: int,
    num_classes: int = 4,
    noise_std: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sequences whose class is the symbol of the frame ``distance`` steps before
    the end (module docstring).

    Args:
        num_sequences: ``N``, sequences to draw.
        distance: ``k``, the cue is frame ``length - k`` (``1 <= k <= length``);
            ``k - 1`` distractor frames follow it.
        length: ``T``, frames a sequence.
        num_classes: symbols, and classes (chance accuracy is ``1 / num_classes``).
        noise_std: standard deviation of Gaussian noise added to the symbol
            features of every frame, cue and distractors alike (not the marker).
        seed: seeds ``numpy.random.default_rng``; the same arguments give the
            same arrays.

    Returns:
        ``x`` float32 ``[N, T, num_classes + 1]`` (one-hot symbol, then the cue
        marker) and ``y`` int32 ``[N]``, the cue's symbol.
    """
    if not 1 <= distance <= length:
        raise ValueError(
            f"distant_cue_sequences: distance must lie in 1..length={length}, "
            f"got {distance}"
        )
    if num_classes < 2:
        raise ValueError(
            f"distant_cue_sequences: num_classes must be >= 2, got {num_classes}"
        )
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, num_classes, size=(num_sequences, length))
    cue = length - distance
    labels = symbols[:, cue].astype(np.int32)  # the cue is a frame like any other
    x = np.zeros((num_sequences, length, num_classes + 1), np.float32)
    x[..., :num_classes] = np.eye(num_classes, dtype=np.float32)[symbols]
    if noise_std > 0:
        noise = rng.normal(0.0, noise_std, size=(num_sequences, length, num_classes))
        x[..., :num_classes] += noise.astype(np.float32)
    x[:, cue, num_classes] = 1.0
    return x, labels
