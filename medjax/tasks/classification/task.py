"""Image-level classification (exam or lesion labels, single- or multi-label)."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax import losses, metrics
from medjax.data import schema as roles
from medjax.tasks.base import Batch, Task, warn_nonfinite_scores

LOSS_FUNCTIONS = ("cross_entropy", "focal")


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
    """Classification of ``batch[image_key]`` into ``num_classes``.

    Per example: softmax cross-entropy (optax) or the focal loss, optionally
    weighted by the true class (``class_weights``; ``"balanced"`` is turned into
    ``N / (K n_k)`` from the training split's counts by ``configure``), and
    accuracy.
    With ``multi_label`` the labels are ``[B, K]`` 0/1 targets and the loss is the
    sigmoid binary cross-entropy averaged over labels.

    Over a split (host side):

    - ``auroc``: binary, of the ``positive_class`` probability; several classes,
      the macro mean of one-vs-rest AUROCs; multi-label, the mean over labels
      (these are MedMNIST's AUC);
    - ``accuracy`` (MedMNIST's ACC: argmax, or per label at ``threshold``) and
      ``balanced_accuracy`` (mean recall over classes);
    - binary: ``sensitivity`` and ``specificity`` of "positive probability >=
      ``threshold``"; several classes: ``recall_<class>`` for each class.

    At each evaluation it draws ``<figure>_confusion.png`` and ``<figure>_roc.png``.

    The model reads ``image_key``: an ``image`` field, or a ``features`` vector
    (``input_role``; None: whichever of the two the data holds, set by
    ``configure``, e.g. ``task.image_key=features data=breast_cancer``).
    """

    num_classes: int = 2
    image_key: str = "image"
    label_key: str = "label"
    positive_class: int = 1
    label_smoothing: float = 0.0
    loss_function: str = "cross_entropy"
    focal_gamma: float = 2.0
    class_weights: tuple[float, ...] | str | None = None
    threshold: float = 0.5
    multi_label: bool = False
    class_names: tuple[str, ...] | None = None
    input_role: str | None = None

    primary_metric = "auroc"  # the default trainer.best_metric

    def __post_init__(self):
        if self.num_classes < 2 and not self.multi_label:
            raise ValueError(f"task.num_classes: expected >= 2, got {self.num_classes}")
        if not 0 <= self.positive_class < self.num_classes:
            raise ValueError(
                f"task.positive_class: expected 0..{self.num_classes - 1}, "
                f"got {self.positive_class}"
            )
        if self.loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"task.loss_function: expected one of {LOSS_FUNCTIONS}, "
                f"got {self.loss_function!r}"
            )
        if self.input_role not in (None, roles.IMAGE, roles.FEATURES):
            raise ValueError(
                f"task.input_role: expected image, features or null, "
                f"got {self.input_role!r}"
            )
        if not 0 < self.threshold < 1:
            raise ValueError(f"task.threshold: expected in (0, 1), got {self.threshold}")
        if self.class_weights == "balanced":
            pass  # weights from the data's class counts, in configure
        elif isinstance(self.class_weights, str):
            raise ValueError(
                f"task.class_weights: expected {self.num_classes} weights, 'balanced' "
                f"or null, got {self.class_weights!r}"
            )
        elif self.class_weights is not None:
            weights = tuple(float(w) for w in self.class_weights)
            if len(weights) != self.num_classes or min(weights) < 0:
                raise ValueError(
                    f"task.class_weights: expected {self.num_classes} non-negative "
                    f"weights (or 'balanced'), got {list(self.class_weights)}"
                )
            object.__setattr__(self, "class_weights", weights)
        if self.class_names is not None:
            if len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"task.class_names: expected {self.num_classes} names, "
                    f"got {list(self.class_names)}"
                )
            object.__setattr__(self, "class_names", tuple(self.class_names))

    def needs(self) -> dict[str, str]:
        return {self.image_key: self.input_role or roles.IMAGE,
                self.label_key: roles.CLASS_LABEL}

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> "Task":
        """Checks the data's roles (the input may be a ``features`` field);
        ``class_weights="balanced"`` becomes ``losses.balanced_class_weights`` of the
        training split's class counts."""
        task = self
        held = dict(data.schema).get(self.image_key)
        if self.input_role is None and held is not None and held.kind == roles.FEATURES:
            task = dataclasses.replace(task, input_role=roles.FEATURES)
        task = super(ClassificationTask, task).configure(
            data, task_name=task_name, data_name=data_name
        )
        if task.class_weights != "balanced":
            return task
        counts = data.class_counts(data.train_split, self.label_key, self.num_classes)
        return dataclasses.replace(task, class_weights=losses.balanced_class_weights(counts))

    @property
    def names(self) -> tuple[str, ...]:
        return self.class_names or tuple(f"class {k}" for k in range(self.num_classes))

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def loss(self, logits: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        if isinstance(self.class_weights, str):
            raise ValueError(
                "task.class_weights='balanced': configure(data) turns it into weights"
            )
        labels, valid = batch[self.label_key], batch["valid"]
        if self.multi_label:
            return self._multi_label_loss(logits, labels, valid)
        if self.loss_function == "focal":
            per_example = losses.softmax_focal_loss(
                logits, labels, gamma=self.focal_gamma, mask=valid
            )
        else:
            per_example = losses.softmax_cross_entropy(
                logits, labels, label_smoothing=self.label_smoothing, mask=valid
            )
        if self.class_weights is not None:
            # Each example counts with its class's weight in the batch mean.
            per_example = per_example * jnp.asarray(self.class_weights)[labels]
        per_example_metrics = {
            "loss": per_example,
            "accuracy": metrics.accuracy(logits, labels, mask=valid),
        }
        return losses.masked_mean(per_example, valid), per_example_metrics

    def _multi_label_loss(self, logits, labels, valid):
        per_label = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
        if self.class_weights is not None:
            per_label = per_label * jnp.asarray(self.class_weights)
        per_example = jnp.where(valid, per_label.mean(-1), 0.0)
        predicted = jax.nn.sigmoid(logits) >= self.threshold
        correct = (predicted == (labels > 0)).mean(-1)
        per_example_metrics = {"loss": per_example, "accuracy": jnp.where(valid, correct, 0.0)}
        return losses.masked_mean(per_example, valid), per_example_metrics

    def host_outputs(self, logits: jnp.ndarray, batch: Batch) -> Batch:
        logits = logits.astype(jnp.float32)
        probabilities = (
            jax.nn.sigmoid(logits) if self.multi_label else jax.nn.softmax(logits, axis=-1)
        )
        return {"probabilities": probabilities, "label": batch[self.label_key]}

    def predictions(self, probabilities: np.ndarray) -> np.ndarray:
        """Decisions: argmax, or for two classes "positive probability >=
        threshold"; multi-label, each label at ``threshold``."""
        if self.multi_label:
            return probabilities >= self.threshold
        if self.num_classes == 2:
            positive = probabilities[:, self.positive_class] >= self.threshold
            return np.where(positive, self.positive_class, 1 - self.positive_class)
        return probabilities.argmax(-1)

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """The split-level metrics of the class docstring. Non-finite
        probabilities (a diverged model) make ``auroc`` NaN, with one warning
        line; the decisions, and the metrics of them, are still those of
        ``predictions``."""
        probabilities, labels = host_outputs["probabilities"], host_outputs["label"]
        warn_nonfinite_scores(probabilities, "class probabilities", "auroc")
        predicted = self.predictions(probabilities)
        if self.multi_label:
            targets = labels > 0
            return {
                "auroc": metrics.multilabel_auroc(probabilities, targets),
                "accuracy": float(np.mean(predicted == targets)),
                "balanced_accuracy": float(np.nanmean([
                    metrics.balanced_accuracy(predicted[:, k], targets[:, k])
                    for k in range(targets.shape[1])
                ])),
            }
        result = {
            "accuracy": float(np.mean(predicted == labels)),
            "balanced_accuracy": metrics.balanced_accuracy(predicted, labels),
        }
        if self.num_classes > 2:
            result["auroc"] = metrics.auroc_one_vs_rest(probabilities, labels)
            for k, name in enumerate(self.names):
                present = labels == k
                result[f"recall_{_slug(name)}"] = (
                    float(np.mean(predicted[present] == k)) if present.any() else np.nan
                )
            return result
        is_positive = labels == self.positive_class
        sensitivity, specificity = metrics.sensitivity_specificity(
            predicted == self.positive_class, is_positive
        )
        result.update(
            auroc=metrics.auroc(probabilities[:, self.positive_class], is_positive),
            sensitivity=sensitivity,
            specificity=specificity,
        )
        return result

    def draw_cases(self, host_outputs: dict[str, np.ndarray], path: str, title: str) -> None:
        """The confusion matrix (per label for multi-label tasks: no, yes) and the
        ROC curves of this evaluation, beside ``path``."""
        from medjax.viz import classification as figures  # matplotlib only when drawing

        stem = os.path.splitext(path)[0]
        probabilities, labels = host_outputs["probabilities"], host_outputs["label"]
        predicted = self.predictions(probabilities)
        if self.multi_label:
            targets = labels > 0
            # Decisions on all labels pooled: a 2x2 matrix of label-level calls.
            figures.plot_confusion_matrix(
                targets.ravel().astype(int), predicted.ravel().astype(int),
                ("absent", "present"), stem + "_confusion.png", title + " (all labels)",
            )
        else:
            figures.plot_confusion_matrix(
                labels, predicted, self.names, stem + "_confusion.png", title
            )
            targets = labels[:, None] == np.arange(self.num_classes)
        names = self.names
        if not self.multi_label and self.num_classes == 2:
            k = self.positive_class  # one curve: the positive class's
            probabilities, targets, names = probabilities[:, [k]], targets[:, [k]], [names[k]]
        figures.plot_roc_curves(probabilities, targets, names, stem + "_roc.png", title)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
