"""On-device augmentation of training batches, driven by the data's field roles:
:mod:`~medjax.augment.geometry` moves every spatial field by one transform per
example, :mod:`~medjax.augment.intensity` changes image intensities."""

from medjax.augment.augmentation import Augmentation  # noqa: F401
from medjax.augment.intensity import adjust_gamma, gaussian_blur  # noqa: F401
