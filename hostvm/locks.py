"""Advisory file locks, one place for every platform: `fcntl.flock` on Linux and macOS, `msvcrt.locking` on
Windows (where fcntl does not exist and the CLI would not even import).

Locks belong to an open file descriptor and die with the process (a kill -9 releases them), which is what the
pid files and build caches rely on. Windows has no shared locks and its byte-range locks are mandatory, so
there every lock is exclusive and covers one byte far past the end of any pid file: the pid stays readable.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_WINDOWS_LOCK_OFFSET = 0x7FFFFFFF  # a byte no pid file reaches
_WINDOWS_POLL = 0.05


def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Take the lock on `fd` without waiting: True if taken, False if another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock(fd: int) -> None:
    """Take the exclusive lock on `fd`, waiting for whoever holds it."""
    if sys.platform == "win32":
        # msvcrt's blocking mode gives up after ten seconds; a build can hold the lock for minutes.
        while not try_lock(fd):
            time.sleep(_WINDOWS_POLL)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def held(path: Path) -> Iterator[int]:
    """The exclusive lock on the file at `path` (created 0600 if missing) for the `with` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock(fd)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock on every platform


def read_pid(fd: int) -> int | None:
    """The pid written at the start of a pid file (the lock holder's), or None if it holds none."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
