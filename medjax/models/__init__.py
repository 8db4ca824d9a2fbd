"""Flax linen models. Each module takes ``__call__(x, *, train)``; presets
(``functools.partial``, a tiny one for tests among them) sit at the bottom of
each file.

Shared by all: :mod:`medjax.models.layers` (normalisation and activation
factories), :mod:`medjax.models.groups` (how a model declares its backbone and
stages for transfer learning) and :mod:`medjax.models.weights` (copying arrays
between variable trees by path).
"""
