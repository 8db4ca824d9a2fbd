"""Flax linen models. Each module takes ``__call__(x, *, train)``; presets sit at the
bottom of each file."""
