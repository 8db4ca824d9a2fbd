import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from medjax.data.datasets.memory import distant_cue_sequences

NUM_CLASSES = 4
LENGTH, DISTANCE = 13, 6  # the cue is frame 7; frames 8..12 follow it


def sequences(num, seed, noise_std=0.3):
    return distant_cue_sequences(
        num,
        distance=DISTANCE,
        length=LENGTH,
        num_classes=NUM_CLASSES,
        noise_std=noise_std,
        seed=seed,
    )


def held_out_accuracy(features_train, y_train, features_test, y_test):
    classifier = LogisticRegression(max_iter=500).fit(features_train, y_train)
    return classifier.score(features_test, y_test)


def test_shapes_dtypes_and_seed():
    x, y = sequences(9, seed=3)
    assert x.shape == (9, LENGTH, NUM_CLASSES + 1) and x.dtype == np.float32
    assert y.shape == (9,) and y.dtype == np.int32
    x_again, y_again = sequences(9, seed=3)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(y, y_again)
    assert not np.array_equal(sequences(9, seed=4)[0], x)


def test_cue_frame_holds_the_label_and_the_only_marker():
    x, y = sequences(200, seed=0, noise_std=0.0)
    cue = LENGTH - DISTANCE
    np.testing.assert_array_equal(np.argmax(x[:, cue, :NUM_CLASSES], axis=-1), y)
    marker = x[..., NUM_CLASSES]
    np.testing.assert_array_equal(marker[:, cue], 1.0)
    np.testing.assert_array_equal(np.delete(marker, cue, axis=1), 0.0)
    # Every frame, cue or distractor, is a one-hot symbol.
    np.testing.assert_array_equal(x[..., :NUM_CLASSES].sum(-1), 1.0)


def test_label_is_read_from_the_cue_frame_alone_and_not_from_the_frames_after_it():
    (x_train, y_train), (x_test, y_test) = sequences(3000, 1), sequences(2000, 2)
    cue = LENGTH - DISTANCE
    symbols = slice(0, NUM_CLASSES)

    def frames(x, where):
        return x[:, where, symbols].reshape(len(x), -1)

    from_cue = held_out_accuracy(
        frames(x_train, [cue]), y_train, frames(x_test, [cue]), y_test
    )
    after = list(range(cue + 1, LENGTH))  # the last distance - 1 frames
    from_after = held_out_accuracy(
        frames(x_train, after), y_train, frames(x_test, after), y_test
    )
    before = list(range(cue))
    from_before = held_out_accuracy(
        frames(x_train, before), y_train, frames(x_test, before), y_test
    )
    assert from_cue > 0.95  # noise 0.3 flips a few symbols
    # Chance is 0.25; the sd of a chance accuracy on 2000 sequences is ~0.01.
    assert abs(from_after - 1 / NUM_CLASSES) < 0.04
    assert abs(from_before - 1 / NUM_CLASSES) < 0.04


def test_distance_out_of_range_is_one_clear_error():
    with pytest.raises(ValueError, match="distance must lie in 1..length=5"):
        distant_cue_sequences(2, distance=6, length=5)
