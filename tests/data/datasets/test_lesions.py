import numpy as np

from medjax.data.datasets.phantoms import phantom_lesions
from medjax.data.datasets.phantoms import torso as phantoms
from medjax.data.datasets.phantoms.builder import phantom_sources
from medjax.data.datasets.phantoms.lesions import LESION_CLASSES, LesionSource
from tests.conftest import TINY_SPLITS


def test_one_record_per_lesion_with_its_centre_and_class(data_dir):
    exams = phantom_sources(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir)["train"]
    lesions = LesionSource(exams)
    expected = []
    for i in range(len(exams)):
        record = exams[i]
        for row in np.flatnonzero(record["lesion_valid"]):
            expected.append((i, row, record["lesion_types"][row] - 1))
    assert len(lesions) == len(expected) > 10
    np.testing.assert_array_equal(lesions.labels(), [label for *_, label in expected])
    for index in (0, len(lesions) - 1):
        case, row, label = expected[index]
        record, exam = lesions[index], exams[case]
        np.testing.assert_array_equal(record["image"], exam["image"])
        np.testing.assert_array_equal(record["lesion_center"], exam["lesion_centers"][row][None])
        assert record["lesion_label"] == label
        assert record["lesion_center_valid"].tolist() == [True]
        # the centre lies inside the lesion's own instance of the lesion mask
        r, c = np.round(record["lesion_center"][0]).astype(int)
        assert exam["lesion_mask"][r, c] == row + 1
        assert LESION_CLASSES[label] == phantoms.LESION_TYPES[exam["lesion_types"][row]]


def test_lesion_dataset_batches(data_dir):
    from medjax.data import pipeline

    data = phantom_lesions(image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir,
                           batch_size=4, eval_batch_size=4)
    source = data.source("validation")
    batch = pipeline.read_examples(source, [0, 1], data.convert,
                                   ("image", "lesion_center", "lesion_label"))
    assert batch["image"].shape == (2, 32, 32, 1) and batch["image"].dtype == np.float32
    assert batch["lesion_center"].shape == (2, 1, 2) and batch["lesion_label"].dtype == np.int32
    assert set(np.unique(data.labels("train", "lesion_label"))) <= {0, 1, 2}
