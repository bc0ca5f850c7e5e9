"""The host agent's log (ha.log) rotates by size: an agent runs for weeks, and a link that flaps or a guest
that restarts its engine in a loop writes a line every few seconds. One old file is kept (ha.log.1).

Several processes write ha.log: the running agent, a second agent that finds it running and leaves, the
next agent after a restart or a spare's activation (supervise.py, spare.py), the supervisor's own lines.
The stdlib's `RotatingFileHandler` rotates by the size of *its* stream: when two of them rotate, the one that
did not keeps writing into the renamed ha.log.1, and its next rotation renames the other's fresh ha.log over
it, deleting up to the whole limit of history. So rotation belongs to no fixed process (the agent that would
own it changes at every restart and activation) but to whoever holds `ha.log.lock` at the moment: each record
is written under that flock, after following a rotation another process made (reopen ha.log when its inode is
not the one we write to), and the size is checked on the file itself, so exactly one writer rotates each time
the limit is passed, and nobody writes into a file after it was rotated away.

The agent's stdout and stderr (tracebacks of threads, faulthandler) are the same file (supervise.py points
them at ha.log): they follow each reopen too, or they would end in a deleted file after two rotations.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

from .. import locks

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 1


def rotating_log(path: Path, lock: Path) -> logging.Handler:
    """`PYMACHINE_LOG_MAX_BYTES` overrides the size (tests make it small)."""
    limit = int(os.environ.get("PYMACHINE_LOG_MAX_BYTES") or MAX_BYTES)
    return SharedRotatingHandler(path, lock, limit, BACKUPS)


class SharedRotatingHandler(logging.FileHandler):
    """A size-rotating log that any number of processes write and rotate (see the module's note)."""

    def __init__(self, path: Path, lock: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = max(1, backups)
        self.lock_path = lock
        # held open for the handler's life: a lock file that is gone or another one means the machine folder
        # was deleted (and maybe made again for a new machine): then never open or rotate files there
        self.lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            locks.lock(self.lock_fd)
            try:
                if self._folder_is_ours():
                    self._follow()
                    size = self._size()
                    if size and size + len(line.encode()) > self.max_bytes:
                        self._rotate()
                stream = self.stream or self._open()
                self.stream = stream
                stream.write(line)
                stream.flush()
            finally:
                locks.unlock(self.lock_fd)
        except Exception:  # noqa: BLE001 - logging never raises into its caller
            self.handleError(record)

    def close(self) -> None:
        super().close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _folder_is_ours(self) -> bool:
        try:
            now, held = os.stat(self.lock_path), os.fstat(self.lock_fd)
        except OSError:
            return False
        return _same(now, held)

    def _size(self) -> int:
        return os.fstat(self.stream.fileno()).st_size if self.stream else 0

    def _follow(self) -> None:
        """Write to the file now at the path: another process rotated it (or it was deleted)."""
        if self.stream is None:
            return
        mine = os.fstat(self.stream.fileno())
        try:
            now = os.stat(self.baseFilename)
        except FileNotFoundError:
            now = None
        if now is None or not _same(now, mine):
            self._reopen(mine)

    def _rotate(self) -> None:
        assert self.stream is not None
        mine = os.fstat(self.stream.fileno())
        base = self.baseFilename
        for n in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{base}.{n}"):
                os.replace(f"{base}.{n}", f"{base}.{n + 1}")
        os.replace(base, f"{base}.1")
        self._reopen(mine)

    def _reopen(self, old: os.stat_result) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream = self._open()
        _move_stdio(old, self.stream.fileno())


def _move_stdio(old: os.stat_result, new_fd: int) -> None:
    """Point stdout/stderr that wrote into the file we left (rotated away) at the one we write now."""
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if _same(st, old):
            if stream is not None:
                stream.flush()
            os.dup2(new_fd, fd)


def stdio_follow(path: Path) -> None:
    """For a process whose stdout/stderr are the log (the supervisor, and the spare it forks with them):
    point them at the log again when they write into a copy rotated away (ha.log.1, or deleted since)."""
    try:
        now = os.stat(path)
    except OSError:
        return  # the folder is gone: nothing to follow
    try:
        backup = os.stat(f"{path}.1")
    except OSError:
        backup = None
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or _same(st, now):
            continue  # a terminal, /dev/null, or the log itself
        if st.st_nlink == 0 or (backup is not None and _same(st, backup)):
            if stream is not None:
                stream.flush()
            new = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.dup2(new, fd)
            finally:
                os.close(new)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
