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


def test_class_balanced_sampling_draws_classes_equally_and_resumes():
    from medjax.data.dataset import Dataset

    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)

    class LabelledSource(NumberedSource):
        def labels(self):
            return labels

    data = Dataset(sources={"train": LabelledSource(100), "validation": NumberedSource(3)},
                   convert=identity, batch_size=10, eval_batch_size=2,
                   sampling="class_balanced")
    weights = data.sample_weights("label")
    np.testing.assert_allclose(weights[[0, 90, 99]], [1 / 90, 1 / 9, 1.0])
    kwargs = dict(batch_size=10, seed=3, num_steps=300, convert=identity, keys=("index",),
                  sample_weights=weights)
    drawn = np.concatenate([b["index"] for b in collect(
        pipeline.train_batches(LabelledSource(100), start_step=0, **kwargs))])
    shares = np.bincount(labels[drawn], minlength=3) / len(drawn)
    # 3000 draws, each class 1/3: the binomial standard deviation is 0.009
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.04)
    tail = collect(pipeline.train_batches(LabelledSource(100), start_step=295, **kwargs))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in tail]), drawn[2950:])
    uniform = Dataset(sources={"train": LabelledSource(100), "validation": NumberedSource(3)},
                      convert=identity, batch_size=10, eval_batch_size=2)
    assert uniform.sample_weights("label") is None
    np.testing.assert_array_equal(uniform.class_counts("train", "label", 4), [90, 9, 1, 0])


def test_unknown_sampling_is_an_error():
    from medjax.data.dataset import Dataset

    with pytest.raises(ValueError, match="data.sampling"):
        Dataset(sources={"train": NumberedSource(3), "validation": NumberedSource(3)},
                convert=identity, batch_size=1, eval_batch_size=1, sampling="oversample")
