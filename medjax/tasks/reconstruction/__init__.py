"""Reconstruction tasks: autoencoders (plain, denoising, variational) and
anomaly detection by reconstruction error."""

from medjax.tasks.reconstruction.anomaly import AnomalyTask
from medjax.tasks.reconstruction.autoencoding import TARGET_KEY, ReconstructionTask

__all__ = ["TARGET_KEY", "AnomalyTask", "ReconstructionTask"]
