"""Registration: similarity-driven iterative registration (``iterative``) over
parametrised transforms (``transforms``)."""

from medjax.tasks.registration.iterative import IterativeRegistration

__all__ = ["IterativeRegistration"]
