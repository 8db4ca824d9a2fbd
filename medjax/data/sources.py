"""Helpers shared by every dataset's sources: where TFDS builders write, and a
``{split: source}`` mapping that builds its sources on first use."""

import fcntl
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


def prepared(make_builder: Callable[[], Any], data_dir: str) -> Any:
    """A TFDS builder (``make_builder()``) whose dataset is built in
    ``data_dir``, building it if needed. Processes sharing ``data_dir`` (the
    processes of a multi-process run, a parallel sweep's jobs) build it once:
    the first takes ``data_dir/.<name>-<config>.lock``, the others wait for it
    and then read what it wrote.

    Raises:
        WriteError: the dataset must be built and ``data_dir`` is not writable.
    """
    builder = make_builder()
    if builder.is_prepared():
        return builder
    writable_data_dir(data_dir)
    config = builder.builder_config.name if builder.builder_config else "default"
    lock = os.path.join(data_dir, f".{builder.name}-{config}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            # Built by another process while this one waited: a new builder
            # reads its dataset_info (the waiting one was made without it).
            builder = make_builder()
            if not builder.is_prepared():
                builder.download_and_prepare()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return builder


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
