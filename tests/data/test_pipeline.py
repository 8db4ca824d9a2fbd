import numpy as np
import pytest

from medjax.data import pipeline


class NumberedSource:
    """A random-access source whose record ``i`` carries ``i``."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitems__(self, indices):
        return [{"index": np.int64(i), "image": np.full((3, 3, 1), i, np.float32)} for i in indices]


def identity(record):
    return record


def collect(iterator):
    return [batch for batch in iterator]


def test_eval_batches_cover_the_split_exactly_once():
    batches = collect(pipeline.eval_batches(
        NumberedSource(23), batch_size=8, convert=identity, keys=("index", "image")
    ))
    assert len(batches) == 3
    assert all(len(b["index"]) == 8 for b in batches)
    seen = np.concatenate([b["index"][b["valid"]] for b in batches])
    np.testing.assert_array_equal(seen, np.arange(23))
    assert batches[-1]["valid"].tolist() == [True] * 7 + [False]


def test_train_batches_drop_the_remainder_and_reshuffle_each_epoch():
    source, batch_size = NumberedSource(10), 4  # 2 steps an epoch, 2 examples dropped
    batches = collect(pipeline.train_batches(
        source, batch_size=batch_size, seed=5, start_step=0, num_steps=6,
        convert=identity, keys=("index",),
    ))
    epochs = [np.concatenate([b["index"] for b in batches[i:i + 2]]) for i in (0, 2, 4)]
    for epoch in epochs:
        assert len(set(epoch.tolist())) == 8  # no repeats within an epoch
    assert not np.array_equal(epochs[0], epochs[1])
    assert all(b["valid"].all() and len(b["index"]) == batch_size for b in batches)


def test_train_batches_resume_where_they_left_off():
    kwargs = dict(batch_size=4, seed=1, num_steps=9, convert=identity, keys=("index",))
    whole = collect(pipeline.train_batches(NumberedSource(13), start_step=0, **kwargs))
    tail = collect(pipeline.train_batches(NumberedSource(13), start_step=5, **kwargs))
    assert len(tail) == 4
    for a, b in zip(whole[5:], tail):
        np.testing.assert_array_equal(a["index"], b["index"])


def test_batch_larger_than_the_split_is_an_error():
    with pytest.raises(ValueError, match="data.batch_size=16"):
        pipeline.steps_per_epoch(10, 16)


def test_ct_window_maps_hu_to_unit_range():
    window = pipeline.CTWindow(center=40, width=400)
    np.testing.assert_allclose(window(np.array([-1000, -160, 40, 240, 3000])), [-1, -1, 0, 1, 1])
