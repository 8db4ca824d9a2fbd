"""Image-level classification (exam or lesion labels)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from medjax import losses, metrics
from medjax.tasks.base import Batch


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    """Softmax classification of ``batch[image_key]`` into ``num_classes``.

    Per example: softmax cross-entropy (optax) and accuracy. Over a split: AUROC
    (binary: of the ``positive_class`` probability; more classes: macro one-vs-rest)
    and, for two classes, sensitivity and specificity of the argmax decision.
    """

    num_classes: int = 2
    image_key: str = "image"
    label_key: str = "label"
    positive_class: int = 1
    label_smoothing: float = 0.0

    primary_metric = "auroc"  # the default trainer.best_metric

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"task.num_classes: expected >= 2, got {self.num_classes}")
        if not 0 <= self.positive_class < self.num_classes:
            raise ValueError(
                f"task.positive_class: expected 0..{self.num_classes - 1}, "
                f"got {self.positive_class}"
            )

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return (self.image_key, self.label_key)

    @property
    def augment_fields(self) -> dict[str, tuple]:
        return {"images": (self.image_key,), "masks": (), "points": ()}

    def inputs(self, batch: Batch) -> jnp.ndarray:
        return batch[self.image_key]

    def loss(self, logits: jnp.ndarray, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        labels, valid = batch[self.label_key], batch["valid"]
        per_example = losses.softmax_cross_entropy(
            logits, labels, label_smoothing=self.label_smoothing, mask=valid
        )
        per_example_metrics = {
            "loss": per_example,
            "accuracy": metrics.accuracy(logits, labels, mask=valid),
        }
        return losses.masked_mean(per_example, valid), per_example_metrics

    def host_outputs(self, logits: jnp.ndarray, batch: Batch) -> Batch:
        return {
            "probabilities": jax.nn.softmax(logits.astype(jnp.float32), axis=-1),
            "label": batch[self.label_key],
        }

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        probabilities, labels = host_outputs["probabilities"], host_outputs["label"]
        if self.num_classes > 2:
            return {"auroc": metrics.auroc_one_vs_rest(probabilities, labels)}
        is_positive = labels == self.positive_class
        predicted = probabilities.argmax(-1) == self.positive_class
        sensitivity, specificity = metrics.sensitivity_specificity(predicted, is_positive)
        return {
            "auroc": metrics.auroc(probabilities[:, self.positive_class], is_positive),
            "sensitivity": sensitivity,
            "specificity": specificity,
        }
