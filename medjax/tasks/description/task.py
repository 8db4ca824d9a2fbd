"""Automatic description of a phantom slice: a short structured finding
generated token by token (``task=description``)."""

import dataclasses
import functools
import os

import jax.numpy as jnp
import numpy as np
import optax

from medjax import losses
from medjax.data import schema as roles
from medjax.errors import ConfigError
from medjax.tasks.base import Batch, Task
from medjax.tasks.description import scores
from medjax.tasks.description.findings import FindingCoder

DECODINGS = ("greedy", "beam")


@dataclasses.dataclass(frozen=True)
class DescriptionTask(Task):
    """Writes each slice's finding (``findings.py``: ``hypodense liver lesion ,
    40 mm``, ``no lesion``) with a captioning model
    (:class:`~medjax.models.sequence.captioner.Captioner`).

    ``prepare_batch`` turns the slice's known lesions (``types_key``,
    ``radii_key``, ``valid_key``) into the finding's tokens ``[B, max_length]``
    inside the jitted step (a gather from :attr:`FindingCoder.token_table`), so
    the data pipeline is the phantoms' own. The model sees ``(image, tokens[:,
    :-1])`` and is trained by teacher forcing: softmax cross-entropy (optax) of
    each next token, ``<eos>`` included, ``<pad>`` excluded, averaged over the
    finding's tokens; per example also ``token_accuracy`` (teacher-forced
    argmax).

    At evaluation it also decodes (``decoding``: 'greedy', or 'beam' with
    ``beam_width`` and ``length_penalty``) and scores the generated findings over the split
    (``scores.py``): ``exact_match`` (every token), ``presence_accuracy``,
    ``count_accuracy``, and over the slices that hold a lesion
    ``type_accuracy``, ``size_accuracy``, ``size_within_one_bin``; ``bleu4``
    (corpus BLEU-4, NLTK, smoothed); ``well_formed`` (fraction that parse).
    Each evaluation draws a grid of slices with the true and generated
    findings (``<figure>_findings.png``).

    Attributes:
        spacing_mm: in-plane pixel spacing; None: the data's, set by
            ``configure``.
        vocab_size: None, or the vocabulary's size, checked (the model config
            reads it: ``${task.vocab_size}``).
        max_lesions, size_bin_mm, min_size_mm, max_size_mm, max_length: of the
            :class:`FindingCoder`.
        num_cases: slices in the figure.
    """

    image_key: str = "image"
    types_key: str = "lesion_types"
    radii_key: str = "lesion_radii"
    valid_key: str = "lesion_valid"
    spacing_mm: float | None = None
    max_lesions: int = 3
    size_bin_mm: int = 10
    min_size_mm: int = 10
    max_size_mm: int = 70
    max_length: int = 12
    vocab_size: int | None = None
    decoding: str = "greedy"
    beam_width: int = 3
    length_penalty: float = 0.0
    num_cases: int = 12

    primary_metric = "exact_match"

    def __post_init__(self):
        coder = self.coder  # checks its options
        if self.vocab_size is not None and self.vocab_size != coder.vocab_size:
            raise ValueError(
                f"task.vocab_size: these options give a vocabulary of "
                f"{coder.vocab_size} tokens, got {self.vocab_size}"
            )
        if self.decoding not in DECODINGS:
            raise ValueError(
                f"task.decoding: expected one of {DECODINGS}, got {self.decoding!r}"
            )
        if self.beam_width < 1:
            raise ValueError(f"task.beam_width: expected >= 1, got {self.beam_width}")
        if self.spacing_mm is not None and not self.spacing_mm > 0:
            raise ValueError(f"task.spacing_mm: expected > 0, got {self.spacing_mm}")

    @property
    def coder(self) -> FindingCoder:
        return _coder(
            self.max_lesions,
            self.size_bin_mm,
            self.min_size_mm,
            self.max_size_mm,
            self.max_length,
        )

    def needs(self) -> dict[str, str]:
        return {
            self.image_key: roles.IMAGE,
            self.types_key: roles.CLASS_LABEL,
            self.radii_key: roles.TARGET,
            self.valid_key: roles.VALIDITY,
        }

    def configure(self, data, *, task_name: str = "", data_name: str = "") -> Task:
        """The roles, and the pixel spacing from the data when not given."""
        task = super().configure(data, task_name=task_name, data_name=data_name)
        if task.spacing_mm is not None:
            return task
        spacing = getattr(data, "spacing", None)
        if not spacing:
            name = data_name or getattr(data, "name", "") or "the data"
            raise ConfigError(
                f"task={task_name or 'description'} needs the pixel spacing in mm to "
                f"size lesions; data={name} has none (set task.spacing_mm)"
            )
        if len(set(spacing[:2])) != 1:
            raise ConfigError(
                f"task.spacing_mm: the data's in-plane spacing {spacing[:2]} is not "
                "square; set task.spacing_mm"
            )
        return dataclasses.replace(task, spacing_mm=float(spacing[0]))

    # -- inside the jitted steps -------------------------------------------------

    def finding_tokens(self, batch: Batch) -> jnp.ndarray:
        """``[B, max_length]`` tokens of each slice's finding."""
        if self.spacing_mm is None:
            raise ValueError("task.spacing_mm: configure(data) sets it from the data")
        count, kind, size_bin = self.coder.fields_from_lesions(
            batch[self.types_key],
            batch[self.radii_key],
            batch[self.valid_key],
            self.spacing_mm,
            xp=jnp,
        )
        return jnp.asarray(self.coder.token_table)[count, kind, size_bin]

    def prepare_batch(self, key, batch: Batch, *, train: bool) -> Batch:
        return {**batch, "tokens": self.finding_tokens(batch)}

    def inputs(self, batch: Batch):
        return batch[self.image_key], batch["tokens"][:, :-1]

    def predict(self, apply, inputs):
        """Teacher-forced logits (for the loss) and the decoded findings."""
        from medjax.models.sequence.captioner import Decoding

        image, _ = inputs
        decoded = apply(
            (image, Decoding(self.decoding, self.beam_width, self.length_penalty))
        )
        return {"logits": apply(inputs), **decoded}

    def loss(self, outputs, batch: Batch) -> tuple[jnp.ndarray, Batch]:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        targets = batch["tokens"][:, 1:]
        if logits.shape[:2] != targets.shape:
            raise ValueError(
                f"task: expected next-token logits [B, {targets.shape[1]}, V], "
                f"got {logits.shape}"
            )
        counted = targets != self.coder.pad_id
        per_token = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets
        )
        tokens = jnp.maximum(counted.sum(-1), 1)
        per_example = jnp.where(counted, per_token, 0.0).sum(-1) / tokens
        right = (jnp.argmax(logits, -1) == targets) & counted
        valid = batch["valid"]
        per_example = jnp.where(valid, per_example, 0.0)
        per_example_metrics = {
            "loss": per_example,
            "token_accuracy": jnp.where(valid, right.sum(-1) / tokens, 0.0),
        }
        return losses.masked_mean(per_example, valid), per_example_metrics

    def host_outputs(self, outputs, batch: Batch) -> Batch:
        return {
            "generated": outputs["tokens"],
            "log_prob": outputs["log_prob"],
            "truth": batch["tokens"],
            "image": batch[self.image_key][..., 0],
        }

    # -- on the host -------------------------------------------------------------

    def split_metrics(self, host_outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """The scores of the class docstring, of the split's generated
        findings against the true ones."""
        return scores.description_scores(
            self.coder, host_outputs["truth"], host_outputs["generated"]
        )

    def draw_cases(
        self, host_outputs: dict[str, np.ndarray], path: str, title: str = ""
    ) -> None:
        """The first ``num_cases`` slices, true and generated findings."""
        from medjax.tasks.description.figures import plot_findings  # matplotlib

        count = min(self.num_cases, len(host_outputs["truth"]))
        coder = self.coder
        plot_findings(
            host_outputs["image"][:count],
            [coder.text(t) for t in host_outputs["truth"][:count]],
            [coder.text(t) for t in host_outputs["generated"][:count]],
            os.path.splitext(path)[0] + "_findings.png",
            title=f"{title} ({self.decoding})".strip(),
        )


@functools.cache
def _coder(*options) -> FindingCoder:
    return FindingCoder(*options)
