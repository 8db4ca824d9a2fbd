"""Helpers shared by every dataset's sources: where TFDS builders write, and a
``{split: source}`` mapping that builds its sources on first use."""

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medjax.errors import WriteError


def default_data_dir() -> str:
    """``$MEDJAX_DATA`` if set, else ``~/.cache/medjax/tensorflow_datasets``."""
    return os.environ.get("MEDJAX_DATA") or str(
        Path.home() / ".cache" / "medjax" / "tensorflow_datasets"
    )


def writable_data_dir(data_dir: str | None) -> str:
    """``data_dir`` (default: ``default_data_dir()``), made if missing, for a
    builder that is about to write a dataset there.

    Raises:
        WriteError: it cannot be made or written (a read-only disk, a path
            below a file), naming the option and the directory.
    """
    option = "data.data_dir" if data_dir else "data.data_dir (default $MEDJAX_DATA)"
    directory = os.path.expanduser(data_dir or default_data_dir())
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise WriteError(
            f"{option}={directory}: cannot build the dataset there "
            f"({error.strerror or error}); point it at a writable directory"
        ) from None
    if not os.access(directory, os.W_OK):
        raise WriteError(
            f"{option}={directory}: not writable, cannot build the dataset there; "
            "point it at a writable directory"
        )
    return directory


class LazySources(Mapping):
    """``{split: source}`` that builds the dataset the first time a source is
    asked for, so that knowing a run's data (its splits, spacing, intensity
    window), as ``medjax-predict`` does, builds nothing."""

    def __init__(self, splits, build: Callable[[], dict[str, Any]]):
        self._splits, self._build, self._sources = tuple(splits), build, None

    def __getitem__(self, split: str):
        if split not in self._splits:
            raise KeyError(split)
        if self._sources is None:
            self._sources = self._build()
        return self._sources[split]

    def __contains__(self, split) -> bool:  # Mapping's would build
        return split in self._splits

    def __iter__(self):
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)
