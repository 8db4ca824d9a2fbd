"""medjax: deep learning for medical imaging on JAX."""

__version__ = "0.1.0"
