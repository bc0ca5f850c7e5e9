"""The engine's one atomic write: readers see the old file or the new one, never a torn or empty one.

Write to a temp file with a unique name in the same folder (mkstemp: two threads or processes saving one
record never share a temp file, which made concurrent `docker kill` calls fail with a 500 when the name was
per process), fsync it, rename it over the target, and fsync the folder so that the rename itself survives a
power loss. `durable=False` skips both fsyncs for records that are rewritten often and repaired by reconcile
when lost (a container's run record); the rename still makes the write atomic.

Not writes, so not through here: whole trees published by one rename (an unpacked layer moved from tmp/
into layers/, a blob downloaded to tmp/ and moved into blobs/ once its digest is verified). Their files are
not fsynced one by one; `sync_filesystem` flushes them all at once before a record names them (the image
store does, images/durable.py): ext4 commits names and sizes every 5 s but a file's delayed data up to 30 s
later, so a record fsynced at once could name files that a power cut leaves empty.

A record that cannot be read anyway (written by an older agent without fsync before a crash, or by hand) is
the reader's to skip or repair: `read_json_record` returns None for it and logs where it is.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from . import reserve

log = logging.getLogger("pymachine_agent.atomic")
PathArg = str | os.PathLike[str]


def fsync_dir(folder: PathArg) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: PathArg) -> None:
    """syncfs(2) of the filesystem holding `path`: every file written there so far is on the disk when this
    returns (one flush for many files, where an fsync each costs a device flush each)."""
    from .runtime import libc  # ctypes: imported by every container start anyway, not by every atomic write

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.syncfs(fd)
    finally:
        os.close(fd)


def write_bytes(path: PathArg, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically (see the module doc). On a full disk the engine's space reserve
    is given back and the write tried once more (see reserve.py): its own state must always be writable."""
    try:
        _write_bytes(os.fspath(path), data, durable, mode)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or not reserve.release_for(os.fspath(path)):
            raise
        _write_bytes(os.fspath(path), data, durable, mode)
        return
    reserve.rearm_released()  # a reserve given back earlier, once the space is back


def _write_bytes(target: str, data: bytes, durable: bool, mode: int) -> None:
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(folder or ".")


def write_text(path: PathArg, text: str, *, durable: bool = True) -> None:
    write_bytes(path, text.encode(), durable=durable)


def write_json(path: PathArg, obj: Any, *, durable: bool = True, **dump_args: Any) -> None:
    write_bytes(path, json.dumps(obj, **dump_args).encode(), durable=durable)


def read_json_record(path: PathArg) -> Any | None:
    """The JSON in `path`; None when it is missing, or unreadable (empty, torn, not JSON), which is logged
    so that a person can find the file: one bad record must not fail a whole listing."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        log.warning("record %s is unreadable (%d bytes: %s); skipped", path, len(data), exc)
        return None
