"""Data: procedural phantoms, TFDS builders, and the grain pipeline to devices."""
