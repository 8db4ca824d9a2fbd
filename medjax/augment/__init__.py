"""On-device augmentation of training batches, driven by the data's field roles."""

from medjax.augment.augmentation import Augmentation  # noqa: F401
