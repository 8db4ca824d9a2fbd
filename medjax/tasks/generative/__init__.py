"""Generative tasks: restricted Boltzmann machines."""

from medjax.tasks.generative.rbm import RBMTask, preprocess

__all__ = ["RBMTask", "preprocess"]
