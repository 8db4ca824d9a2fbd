"""The Wisconsin breast-cancer dataset: split sizes, stratification, determinism,
train-only standardisation, labels, and the record format the pipeline reads."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from medjax.data import pipeline
from medjax.data.datasets import breast_cancer as tabular


@pytest.fixture(scope="module")
def dataset():
    return tabular.breast_cancer(batch_size=8, eval_batch_size=16)


def test_default_split_is_stratified_60_20_20(dataset):
    sizes = {name: len(source) for name, source in dataset.sources.items()}
    assert sizes == {"train": 343, "validation": 113, "test": 113}
    malignant = {name: int(s.arrays["label"].sum()) for name, s in dataset.sources.items()}
    # 212 malignant: round(0.2 * 212) = 42 in validation and test, 128 in train.
    assert malignant == {"train": 128, "validation": 42, "test": 42}


def test_splits_partition_the_data_and_labels_are_malignant_one():
    raw = load_breast_cancer()
    arrays = tabular.breast_cancer_arrays(standardize=False)
    features = np.concatenate([arrays[s][0] for s in tabular.SPLITS])
    labels = np.concatenate([arrays[s][1] for s in tabular.SPLITS])
    assert features.shape == (569, 30) and labels.dtype == np.int32
    # Every original row appears exactly once, with label 1 where sklearn says 0.
    order = np.lexsort(features.T[::-1])
    raw_order = np.lexsort(raw.data.astype(np.float32).T[::-1])
    np.testing.assert_array_equal(features[order], raw.data.astype(np.float32)[raw_order])
    np.testing.assert_array_equal(labels[order], 1 - raw.target[raw_order])
    assert labels.sum() == 212  # malignant


def test_split_is_deterministic_and_depends_on_seed():
    first = tabular.breast_cancer_arrays(seed=0)
    again = tabular.breast_cancer_arrays(seed=0)
    other = tabular.breast_cancer_arrays(seed=1)
    for name in tabular.SPLITS:
        np.testing.assert_array_equal(first[name][0], again[name][0])
    assert not np.array_equal(first["test"][0], other["test"][0])


def test_standardised_with_train_statistics_only():
    raw = tabular.breast_cancer_arrays(standardize=False)
    scaled = tabular.breast_cancer_arrays(standardize=True)
    train = raw["train"][0].astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(scaled["train"][0].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(scaled["train"][0].std(axis=0), 1.0, atol=1e-5)
    expected_test = (raw["test"][0] - mean) / std
    np.testing.assert_allclose(scaled["test"][0], expected_test, rtol=1e-4, atol=1e-4)
    # The test split's own statistics were not used: its mean is not exactly 0.
    assert np.abs(scaled["test"][0].mean(axis=0)).max() > 1e-3


def test_records_and_pipeline_batches(dataset):
    source = dataset.source("validation")
    record = source[0]
    assert set(record) == {"features", "label"}
    assert record["features"].shape == (30,) and record["features"].dtype == np.float32
    records = source.__getitems__([3, 0, 5])
    np.testing.assert_array_equal(records[1]["features"], record["features"])
    batch = pipeline.read_examples(source, [0, 1, 2], dataset.convert, ("features", "label"))
    assert batch["features"].shape == (3, 30) and batch["features"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    batches = list(pipeline.eval_batches(
        source, batch_size=16, convert=dataset.convert, keys=("features", "label")
    ))
    assert len(batches) == 8  # 113 = 7 * 16 + 1
    assert int(sum(b["valid"].sum() for b in batches)) == 113
    with pytest.raises(IndexError):
        source[113]


def test_split_sizes_take_a_prefix_and_data_dir_is_ignored():
    full = tabular.breast_cancer()
    small = tabular.breast_cancer(
        split_sizes={"train": 4, "validation": 2, "test": 3}, data_dir="/nonexistent"
    )
    assert [len(small.source(s)) for s in tabular.SPLITS] == [4, 2, 3]
    np.testing.assert_array_equal(
        small.source("test").arrays["features"], full.source("test").arrays["features"][:3]
    )
    with pytest.raises(ValueError, match=r"data.split_sizes.train=400: expected 1..343"):
        tabular.breast_cancer(split_sizes={"train": 400})
    with pytest.raises(ValueError, match="unknown splits"):
        tabular.breast_cancer(split_sizes={"holdout": 4})


def test_custom_fractions_and_bad_fractions():
    data = tabular.breast_cancer(split_fractions={"train": 0.8, "validation": 0.2})
    assert sorted(data.sources) == ["train", "validation"]
    assert len(data.source("train")) + len(data.source("validation")) == 569
    with pytest.raises(ValueError, match="summing to 1"):
        tabular.breast_cancer(split_fractions={"train": 0.5, "validation": 0.2, "test": 0.2})
