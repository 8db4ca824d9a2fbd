"""One training process per run directory: ``<run_dir>/run.lock``.

The lock is an OS-level ``flock`` on that file, so it is released by the kernel
whenever its process ends, however it ends (a ``kill -9`` included); the file
also holds its owner's pid, host and start time, for the message a second
process gets. A file naming an owner whose lock is gone is a stale lock left by
a killed process: it is taken over with a warning. On a filesystem without
``flock`` support the owner's pid is checked instead (on this host only).

Holding is re-entrant within one process (``medjax-train`` takes the lock before
writing ``config.yaml``, and ``engine.loop.train`` takes it again for Python
callers): the lock is released when the outermost holder lets go.
"""

import contextlib
import datetime
import errno
import fcntl
import functools
import json
import logging
import os
import socket
from collections.abc import Iterator

from medjax.errors import RunDirectoryError

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

_held: dict[str, list] = {}  # lock path -> [open file descriptor, depth]


def _identity() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _describe(owner: dict) -> str:
    return (
        f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
        f"started {owner.get('started', '?')}"
    )


def _read_owner(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {}  # written by someone else, or torn: an unknown owner
    return owner if isinstance(owner, dict) else {}


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _flock(fd: int) -> bool:
    """True if locked; False if flock is unsupported here. Raises
    ``BlockingIOError`` when another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BlockingIOError(error.errno, "locked") from error
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise
    return True


def acquire(run_dir: str) -> None:
    """Takes ``run_dir``'s lock for this process (again, if it holds it).

    Raises:
        RunDirectoryError: a live process holds it; the message names it.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.realpath(os.path.join(run_dir, LOCK_NAME))
    if path in _held:
        _held[path][1] += 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            locked = _flock(fd)
        except BlockingIOError:
            owner = _read_owner(fd) or {}
            raise RunDirectoryError(
                f"{os.path.dirname(path)}: in use by another medjax-train "
                f"({_describe(owner)}); wait for it to finish or stop it"
            ) from None
        owner = _read_owner(fd)  # this process holds no lock here: any owner is another
        if owner is not None:
            pid, here = owner.get("pid"), owner.get("host") == socket.gethostname()
            if not locked and (not here or (pid != os.getpid() and _pid_alive(pid))):
                raise RunDirectoryError(
                    f"{os.path.dirname(path)}: in use by another medjax-train "
                    f"({_describe(owner)}; this filesystem has no file locks: "
                    f"remove {path} if that process is gone)"
                )
            logger.warning(
                "medjax: taking over the stale lock %s of a process that is gone (%s)",
                path, _describe(owner),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_identity()) + "\n").encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _held[path] = [fd, 1]


def release(run_dir: str) -> None:
    """Lets go of ``run_dir``'s lock (once per ``acquire``); the file stays,
    emptied, so that a later process does not take it for a stale one."""
    path = os.path.realpath(os.path.join(run_dir, LOCK_NAME))
    held = _held.get(path)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    fd = held[0]
    del _held[path]
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def holding(run_dir: str) -> Iterator[None]:
    """``run_dir``'s lock held for the ``with`` block (released on exceptions,
    ``KeyboardInterrupt`` and ``SystemExit`` too).

    In a multi-process run (``medjax.engine.distributed``) the job is one
    owner: process 0 takes the lock and the others learn whether it could, so
    that none trains where process 0 was refused."""
    import jax

    if jax.process_count() == 1:
        acquire(run_dir)
    else:
        from medjax.engine import distributed

        refused = None
        if distributed.is_main_process():
            try:
                acquire(run_dir)
            except RunDirectoryError as error:
                refused = error
        if distributed.any_process(refused is not None):
            raise refused or RunDirectoryError(
                f"{run_dir}: process 0 could not take the run directory (see its output)"
            )
    try:
        yield
    finally:
        release(run_dir)


def holds_run_dir(function):
    """Decorates a function taking ``run_dir=`` so that it runs holding it."""

    @functools.wraps(function)
    def locked(*args, run_dir: str, **kwargs):
        with holding(run_dir):
            return function(*args, run_dir=run_dir, **kwargs)

    return locked
