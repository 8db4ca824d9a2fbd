"""Deep belief net classifier: an MLP of sigmoid layers initialised from a
greedily pretrained stack of RBMs, then fine-tuned end to end.

Recipe (Hinton, Osindero and Teh 2006; Hinton and Salakhutdinov 2006):

1. ``medjax.engine.pretraining.pretrain_dbn`` trains RBM 1 on the binarised images,
   RBM 2 on RBM 1's hidden probabilities, and so on;
2. ``save_rbm_stack`` writes their weights to an ``.npz`` file, which a
   ``DBNClassifier(pretrained=PATH)`` loads as its initial hidden layers (so the
   ordinary ``medjax-train task=classification model=dbn
   model.pretrained=PATH`` fine-tunes it), or ``copy_rbm_weights`` puts them into
   an initialised parameter tree;
3. the classifier (RBM layers as deterministic sigmoid layers, plus a fresh
   softmax head) is fine-tuned with ``ClassificationTask`` like any other model.

Layer ``l`` of the classifier computes ``sigmoid(x W_l + c_l)``: exactly the RBM's
``p(h = 1 | v)``, so before fine-tuning its features are the pretrained ones.
"""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from medjax.models.groups import ParameterGroups, Transferable, one_stage_each
from medjax.models.weights import copy_weights


class DBNClassifier(nn.Module, Transferable):
    """Sigmoid MLP on flattened (optionally binarised) inputs, then a linear head.

    Attributes:
        num_classes: number of output logits.
        hidden_sizes: width of each hidden layer (the RBMs' ``num_hidden``).
        threshold: binarise inputs as ``x > threshold`` first, as
            ``RBMTask`` did for the first RBM (None: use them as they are).
        dropout_rate: dropout after each hidden layer.
        pretrained: an ``.npz`` written by ``save_rbm_stack``: the hidden layers
            start from its weights instead of a random initialisation (the head
            is always fresh). A path keeps the module hashable and configurable.

    Parameters: ``layer_{l}/{kernel,bias}`` and ``head/{kernel,bias}``. Parameter
    groups: the hidden layers are the backbone, one stage each (no running
    statistics to freeze); ``head`` is the head.
    """

    num_classes: int
    hidden_sizes: Sequence[int] = (256, 128)
    threshold: float | None = 0.0
    dropout_rate: float = 0.0
    pretrained: str | None = None

    def parameter_groups(self) -> ParameterGroups:
        layers = [f"layer_{index}" for index in range(len(self.hidden_sizes))]
        return ParameterGroups((one_stage_each("rbm_layers", layers),))

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Maps ``x [B, ...]`` to logits ``[B, num_classes]``."""
        x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
        if self.threshold is not None:
            x = (x > self.threshold).astype(jnp.float32)
        # Read only when initialising: a trained (or restored) model needs no file.
        stack = None
        if self.pretrained and self.is_initializing():
            stack = load_rbm_stack(self.pretrained)
        if stack is not None and len(stack) != len(self.hidden_sizes):
            raise ValueError(
                f"model.pretrained: {len(stack)} RBM layers in {self.pretrained}, "
                f"expected {len(self.hidden_sizes)} (model.hidden_sizes)"
            )
        for index, width in enumerate(self.hidden_sizes):
            dense = {}
            if stack is not None:
                kernel, bias = stack[index]
                if kernel.shape != (x.shape[-1], width):
                    raise ValueError(
                        f"model.pretrained: layer {index} of {self.pretrained} has shape "
                        f"{kernel.shape}, expected {(x.shape[-1], width)}"
                    )
                dense = dict(kernel_init=_constant(kernel), bias_init=_constant(bias))
            x = nn.sigmoid(nn.Dense(width, name=f"layer_{index}", **dense)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="head")(x)


def _constant(value: np.ndarray):
    def init(key, shape, dtype=jnp.float32):
        return jnp.asarray(value, dtype).reshape(shape)

    return init


def rbm_layers(rbm_variables: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(kernel [D, H], hidden_bias [H])`` of each RBM's variables."""
    return [
        (np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["hidden_bias"]))
        for v in rbm_variables
    ]


def copy_rbm_weights(params: dict, rbm_variables: Sequence[dict]) -> dict:
    """``params`` of a ``DBNClassifier`` with ``layer_l`` replaced by RBM ``l``'s
    weights and hidden biases (exact copies, through
    :func:`medjax.models.weights.copy_weights`); the head is kept."""
    stack = {
        f"layer_{index}": {"kernel": kernel, "bias": bias}
        for index, (kernel, bias) in enumerate(rbm_layers(rbm_variables))
    }
    copied, report = copy_weights(
        {"params": params},
        {"params": stack},
        {name: name for name in stack},
        source_name="the RBM stack",
    )
    if report.mismatched or report.unused:
        raise ValueError(
            f"copy_rbm_weights: the RBM stack does not fit the classifier: "
            f"shapes {report.mismatched}, without a layer {report.unused}"
        )
    return copied["params"]


def save_rbm_stack(path: str, rbm_variables: Sequence[dict]) -> None:
    """Writes the RBM stack's weights (``kernel_l``, ``hidden_bias_l``, and
    ``visible_bias_l`` for reference) to ``path`` (``.npz``)."""
    arrays = {}
    for index, variables in enumerate(rbm_variables):
        for name in ("kernel", "hidden_bias", "visible_bias"):
            arrays[f"{name}_{index}"] = np.asarray(variables["params"][name])
    np.savez(path, **arrays)


def load_rbm_stack(path: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(kernel, hidden_bias)`` per layer from a ``save_rbm_stack`` file."""
    try:
        with np.load(path) as stored:
            count = sum(1 for name in stored.files if name.startswith("kernel_"))
            return [
                (stored[f"kernel_{i}"], stored[f"hidden_bias_{i}"])
                for i in range(count)
            ]
    except (OSError, KeyError) as error:
        raise ValueError(
            f"model.pretrained: cannot read an RBM stack from {path}: {error}"
        ) from None


dbn_tiny = partial(DBNClassifier, hidden_sizes=(8, 4))
dbn_small = partial(DBNClassifier, hidden_sizes=(256, 128))
