"""A container's overlay as a detached mount: an fd of its root that is mounted in no namespace.

`docker cp`/`docker export` of a container that is not running need its merged filesystem. A short-lived
thread of the engine takes a mount namespace of its own (unshare(CLONE_FS | CLONE_NEWNS) works per thread),
mounts the overlay there, opens an O_PATH fd of its root and ends: the namespace dies with the thread and the
mount lives on, detached, as long as the fd (which the whole process shares) is open. No path of the guest
ever shows it, no other process can reach or race it, nothing needs unmounting, and closing the fd (or the
engine dying) frees it. (The new mount API, fsopen + fsmount, would give the same fd but takes option strings
of at most 256 bytes: three layer paths; overlay's `lowerdir+` lifts that only from Linux 6.8.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator

from pymachine_agent.runtime import libc

CLONE_FS = 0x00000200


def overlay_options(layers: list[str], upper: str, writable: bool) -> str:
    """overlayfs mount data for a container's filesystem (pure). Read-only: the upper dir becomes the top
    lower layer, so no workdir is taken from a container that may start meanwhile."""
    lower = list(reversed(layers))  # overlayfs wants the top-most layer first
    if writable:
        work = os.path.join(os.path.dirname(upper), "work")
        return f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    # a mount without an upper dir needs two lower layers: an image-less container repeats its upper dir
    return f"lowerdir={':'.join([upper, *(lower or [upper])])}"


def _mount_in_own_namespace(where: str, data: str, flags: int, out: list[int | BaseException]) -> None:
    try:
        libc.unshare(CLONE_FS | libc.CLONE_NEWNS)  # this thread only: the engine's namespace is untouched
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        libc.mount("overlay", where, "overlay", flags, data)
        out.append(os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    except BaseException as exc:  # handed to the caller's thread
        out.append(exc)


@contextlib.contextmanager
def overlay(layers: list[str], upper: str, writable: bool) -> Iterator[int]:
    """Yields an O_PATH fd of the root of a detached overlay of `layers` + `upper`; nosuid, nodev, noexec."""
    data = overlay_options(layers, upper, writable)
    if len(data) >= 4000:  # the mount data is one page
        raise OSError(7, f"too many image layers for one overlay mount ({len(layers)})")
    if writable:
        os.makedirs(os.path.join(os.path.dirname(upper), "work"), exist_ok=True)
    flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | (0 if writable else libc.MS_RDONLY)
    out: list[int | BaseException] = []
    where = tempfile.mkdtemp(prefix="pm-detached-")  # a mount point only in the thread's namespace
    try:
        t = threading.Thread(target=_mount_in_own_namespace, args=(where, data, flags, out), name="detach")
        t.start()
        t.join()
    finally:
        os.rmdir(where)  # the thread and its namespace are gone: an empty folder again
    result = out[0] if out else RuntimeError("the mount thread ended without a result")
    if isinstance(result, BaseException):
        raise result
    try:
        yield result
    finally:
        os.close(result)
