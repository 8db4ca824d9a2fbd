"""Atomic file writes: a file is written under a temporary name beside its
destination and renamed over it only once complete, so a crash or a full disk
never leaves a half-written file where a previous good one was.

Library writers that pick a format from the file name (nibabel's ``.nii.gz``,
matplotlib's ``.png``) keep working: the temporary name ends like the real one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

from medjax.errors import WriteError


def temporary_path(path: str | os.PathLike) -> str:
    """A unique hidden name in ``path``'s directory that ends like ``path``."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(directory, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path to write ``path``'s new content to; on success it
    replaces ``path`` in one rename. If writing fails with an ``OSError`` (e.g.
    ``ENOSPC``, ``EACCES``) the temporary file is removed, ``path`` keeps its
    previous content, and a ``WriteError`` names the path and the reason; any
    other exception is re-raised as it is (after the clean-up)."""
    path = os.fspath(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        if isinstance(error, WriteError):
            raise
        reason = error.strerror or str(error) or type(error).__name__
        kept = "; the previous file is intact" if os.path.exists(path) else ""
        raise WriteError(f"{path}: could not write it ({reason}){kept}") from error
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, content: Any) -> None:
    """``content`` as indented JSON with a final newline, written atomically.
    Non-finite floats (an undefined metric) are written as ``null``: ``NaN`` is
    not JSON, and other readers (``jq``, browsers) reject it."""
    text = json.dumps(_finite_or_null(content), indent=2, allow_nan=False)
    write_text(path, text + "\n")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yields a new temporary directory beside ``path`` to fill with ``path``'s
    new content (e.g. the files of a DICOM series). On success it takes
    ``path``'s place: an existing ``path`` is first renamed aside, the new
    directory renamed in, and only then the old one deleted, so until the new
    directory is complete the old one stays where it was. If filling it fails
    with an ``OSError`` the temporary directory is removed, ``path`` keeps its
    previous content, and a ``WriteError`` names the path and the reason; any
    other exception is re-raised as it is (after the clean-up).

    POSIX renames a directory over an existing one only when that one is empty,
    so the swap takes two renames; between them ``path`` is briefly absent (a
    crash there leaves the old content under a hidden ``.old-*`` name beside it).
    """
    import shutil

    path = os.fspath(path)
    temporary = temporary_path(path)
    try:
        os.mkdir(temporary)
        yield temporary
        if os.path.lexists(path):
            directory, name = os.path.split(os.path.abspath(path))
            old = os.path.join(directory, f".old-{uuid.uuid4().hex[:8]}-{name}")
            os.rename(path, old)
            try:
                os.rename(temporary, path)
            except OSError:
                os.rename(old, path)  # put the previous content back
                raise
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        else:
            os.rename(temporary, path)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, WriteError):
            raise
        reason = error.strerror or str(error) or type(error).__name__
        kept = "; the previous content is intact" if os.path.exists(path) else ""
        raise WriteError(f"{path}: could not write it ({reason}){kept}") from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
