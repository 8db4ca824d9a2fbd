import jax.numpy as jnp
import numpy as np
import pytest

from medjax.tasks.classification.task import ClassificationTask


def test_padding_does_not_change_the_loss():
    task = ClassificationTask()
    logits = jnp.array([[1.0, -1.0], [0.5, 2.0], [9.0, -9.0]])
    batch = {"label": jnp.array([0, 1, 1]), "valid": jnp.array([True, True, False])}
    loss, per_example = task.loss(logits, batch)
    only_valid, _ = task.loss(logits[:2], {"label": batch["label"][:2], "valid": jnp.ones(2, bool)})
    assert float(loss) == pytest.approx(float(only_valid), rel=1e-6)
    assert per_example["loss"][2] == 0 and per_example["accuracy"].tolist() == [1, 1, 0]


def test_split_metrics_binary():
    task = ClassificationTask()
    outputs = {
        "probabilities": np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]),
        "label": np.array([0, 1, 0, 1]),
    }
    result = task.split_metrics(outputs)
    # positives score 0.4, 0.8; negatives 0.1, 0.7 -> 3 of 4 pairs ordered
    assert result["auroc"] == 0.75
    assert result["sensitivity"] == 0.5 and result["specificity"] == 0.5


def test_host_outputs_are_probabilities():
    task = ClassificationTask(num_classes=3)
    logits = jnp.array([[0.0, 0.0, np.log(2.0)]])
    out = task.host_outputs(logits, {"label": jnp.array([2])})
    np.testing.assert_allclose(out["probabilities"], [[0.25, 0.25, 0.5]], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"positive_class": 2}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError, match="task."):
        ClassificationTask(**kwargs)


def _ce(logits, label):
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.exp(logits).sum()) - logits[label])


def test_class_weights_scale_each_example_by_its_class():
    task = ClassificationTask(num_classes=3, class_weights=(1.0, 2.0, 0.5))
    logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1], [5.0, 0.0, 0.0]])
    batch = {"label": jnp.array([0, 1, 2, 1]), "valid": jnp.array([True, True, True, False])}
    loss, per_example = task.loss(logits, batch)
    expected = [1.0 * _ce(logits[0], 0), 2.0 * _ce(logits[1], 1), 0.5 * _ce(logits[2], 2)]
    np.testing.assert_allclose(per_example["loss"][:3], expected, rtol=1e-5)
    assert float(per_example["loss"][3]) == 0.0
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-5)


def test_focal_loss_down_weights_easy_examples():
    task = ClassificationTask(loss_function="focal", focal_gamma=2.0)
    logits = jnp.array([[3.0, 0.0], [0.0, 0.5]])
    batch = {"label": jnp.array([0, 0]), "valid": jnp.ones(2, bool)}
    _, per_example = task.loss(logits, batch)
    p = np.exp(logits[:, 0]) / np.exp(logits).sum(-1)
    expected = -((1 - p) ** 2) * np.log(p)
    np.testing.assert_allclose(per_example["loss"], expected, rtol=1e-5)


def test_threshold_sets_the_binary_decision():
    outputs = {
        "probabilities": np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]]),
        "label": np.array([0, 1, 1, 1]),
    }
    at_half = ClassificationTask().split_metrics(outputs)
    at_quarter = ClassificationTask(threshold=0.25).split_metrics(outputs)
    assert at_half["sensitivity"] == pytest.approx(1 / 3) and at_half["specificity"] == 1.0
    assert at_quarter["sensitivity"] == 1.0 and at_quarter["specificity"] == 1.0
    # balanced accuracy = (recall healthy + recall lesion) / 2
    assert at_half["balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2)
    assert at_half["accuracy"] == 0.5


def test_multiclass_split_metrics_against_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    task = ClassificationTask(num_classes=3, class_names=("liver hypo", "liver hyper", "nodule"))
    result = task.split_metrics({"probabilities": probabilities, "label": labels})
    predicted = probabilities.argmax(-1)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert result["auroc"] == pytest.approx(
        roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    assert result["recall_nodule"] == pytest.approx(np.mean(predicted[labels == 2] == 2))


def test_multi_label_loss_and_medmnist_metrics():
    task = ClassificationTask(num_classes=3, multi_label=True)
    logits = jnp.array([[2.0, -1.0, 0.0], [-3.0, 1.0, 4.0]])
    labels = jnp.array([[1, 0, 0], [0, 0, 1]])
    loss, per_example = task.loss(logits, {"label": labels, "valid": jnp.ones(2, bool)})
    x, y = np.asarray(logits, np.float64), np.asarray(labels)
    bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(per_example["loss"], bce.mean(-1), rtol=1e-5)
    # sigmoid >= 0.5: [1, 0, 1] and [0, 1, 1] -> 2/3 of the labels right in each
    np.testing.assert_allclose(per_example["accuracy"], [2 / 3, 2 / 3], rtol=1e-6)
    scores = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.7], [0.6, 0.5, 0.9], [0.2, 0.4, 0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 1, 0]])
    result = task.split_metrics({"probabilities": scores, "label": targets})
    # MedMNIST: AUC is the mean of the per-label AUCs: labels 0 and 2 are ranked
    # perfectly; label 1's positives 0.8, 0.4 against negatives 0.2, 0.5 order 3 of
    # 4 pairs. ACC is the mean per-label accuracy at 0.5.
    assert result["auroc"] == pytest.approx((1 + 0.75 + 1) / 3)
    expected_acc = np.mean((scores >= 0.5) == targets)
    assert result["accuracy"] == pytest.approx(expected_acc)


def test_figures_are_drawn(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 40)
    probabilities = rng.dirichlet(np.ones(3), 40)
    task = ClassificationTask(num_classes=3)
    task.draw_cases({"probabilities": probabilities, "label": labels},
                    str(tmp_path / "validation_step_000010.png"), "validation, step 10")
    for suffix in ("_confusion.png", "_roc.png"):
        path = tmp_path / f"validation_step_000010{suffix}"
        assert path.stat().st_size > 5000


def test_confusion_matrix_counts(tmp_path):
    from medjax.viz.classification import plot_confusion_matrix

    matrix = plot_confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]),
                                   ("a", "b", "c"), str(tmp_path / "c.png"))
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


@pytest.mark.parametrize("kwargs", [
    {"loss_function": "hinge"}, {"class_weights": (1.0,)}, {"threshold": 1.0},
    {"class_names": ("a",)},
])
def test_more_bad_settings(kwargs):
    with pytest.raises(ValueError, match="task."):
        ClassificationTask(**kwargs)


@pytest.mark.parametrize("kind", ["binary-class", "multi-class", "multi-label, binary-class"])
def test_auroc_and_accuracy_are_medmnists_auc_and_acc(kind):
    # MedMNIST's Evaluator (medmnist/evaluator.py getAUC/getACC), restated with
    # scikit-learn: binary: AUC of the last column's score, ACC at score > 0.5;
    # multi-class: mean one-vs-rest AUC over classes, ACC of the argmax;
    # multi-label: mean AUC and mean accuracy (score >= 0.5) over labels.
    from sklearn.metrics import accuracy_score, roc_auc_score

    rng = np.random.default_rng(7)
    n, k = 80, (2 if kind == "binary-class" else 4)
    if kind == "multi-label, binary-class":
        labels = rng.integers(0, 2, (n, k))
        scores = 1 / (1 + np.exp(-(rng.normal(size=(n, k)) + 1.2 * (2 * labels - 1))))
        auc = np.mean([roc_auc_score(labels[:, i], scores[:, i]) for i in range(k)])
        acc = np.mean([accuracy_score(labels[:, i], scores[:, i] >= 0.5) for i in range(k)])
        task = ClassificationTask(num_classes=k, multi_label=True)
    else:
        labels = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + np.eye(k)[labels]
        scores = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        if kind == "binary-class":
            auc = roc_auc_score(labels, scores[:, -1])
            acc = accuracy_score(labels, scores[:, -1] > 0.5)
        else:
            auc = np.mean([roc_auc_score(labels == i, scores[:, i]) for i in range(k)])
            acc = accuracy_score(labels, scores.argmax(-1))
        task = ClassificationTask(num_classes=k)
    result = task.split_metrics({"probabilities": scores, "label": labels})
    assert result["auroc"] == pytest.approx(auc, abs=1e-12)
    assert result["accuracy"] == pytest.approx(acc, abs=1e-12)


class _Data:
    """The parts of a Dataset that configure reads: roles and class counts."""

    name = "toy"
    train_split = "train"

    def __init__(self, schema, labels=()):
        self.schema, self._labels = schema, np.asarray(labels, int)

    def class_counts(self, split, key, num_classes):
        assert (split, key) == ("train", "label")
        return np.bincount(self._labels, minlength=num_classes)


def test_configure_turns_balanced_weights_into_weights_of_the_counts():
    from medjax.data import schema as roles

    data = _Data({"image": roles.image(), "label": roles.CLASS},
                 labels=[0, 0, 0, 1, 2, 2])
    task = ClassificationTask(num_classes=3, class_weights="balanced")
    with pytest.raises(ValueError, match="configure"):  # not usable before
        batch = {"label": jnp.array([0]), "valid": jnp.ones(1, bool)}
        task.loss(jnp.zeros((1, 3)), batch)
    configured = task.configure(data)
    # N / (K n_k): 6 / (3 * [3, 1, 2])
    np.testing.assert_allclose(configured.class_weights, [2 / 3, 2.0, 1.0])
    assert configured.batch_keys == ("image", "label")
    with pytest.raises(ValueError, match="task.class_weights"):
        ClassificationTask(class_weights="even")


def test_configure_names_the_missing_role():
    from medjax.data import schema as roles
    from medjax.tasks.base import TaskDataMismatch

    data = _Data({"image": roles.image(), "mask": roles.label_map()})
    with pytest.raises(TaskDataMismatch, match=(
        "^task=classification needs a class_label field 'label'; data=decathlon has no "
        "field 'label'")):
        ClassificationTask().configure(
            data, task_name="classification", data_name="decathlon"
        )


def test_lesion_task_reads_its_points_with_their_validity():
    from medjax.data import schema as roles
    from medjax.tasks.classification.lesion import LesionClassificationTask

    data = _Data({
        "image": roles.image(), "lesion_label": roles.CLASS,
        "lesion_center": roles.points(valid="lesion_center_valid"),
        "lesion_center_valid": roles.VALID, "organ_mask": roles.label_map(),
    })
    task = LesionClassificationTask().configure(data)
    assert set(task.batch_keys) == {"image", "lesion_label", "lesion_center",
                                    "lesion_center_valid"}
    center = dict(task.batch_roles())["lesion_center"]
    assert center == roles.points("lesion_center_valid")
