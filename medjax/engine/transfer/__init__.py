"""Transfer learning: load a pretrained subtree by path (``loading``), freeze or
slow down the parts a model declares as its backbone (``optimizer``).

The model side lives in :mod:`medjax.models`: ``models.groups`` (each model's
declaration of its backbones and stages) and ``models.weights`` (the one
routine that copies arrays between variable trees by path, which
``load_pretrained``, ``models.autoencoder.transfer_encoder`` and
``models.dbn.copy_rbm_weights`` share).
"""

from medjax.engine.transfer.loading import load_pretrained, resolve_checkpoint
from medjax.engine.transfer.optimizer import (
    GROUPS,
    MODES,
    check_mode,
    frozen_stages_for,
    label_parameters,
    prepare_model,
    transfer_optimizer,
)
from medjax.models.groups import Backbone, ParameterGroups, Transferable, groups_of
from medjax.models.weights import LoadReport, copy_weights

__all__ = [
    "GROUPS",
    "MODES",
    "Backbone",
    "LoadReport",
    "ParameterGroups",
    "Transferable",
    "check_mode",
    "copy_weights",
    "frozen_stages_for",
    "groups_of",
    "label_parameters",
    "load_pretrained",
    "prepare_model",
    "resolve_checkpoint",
    "transfer_optimizer",
]
