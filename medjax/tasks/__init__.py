"""Tasks: what a model sees, its loss and metrics. See ``medjax.tasks.base.Task``."""
