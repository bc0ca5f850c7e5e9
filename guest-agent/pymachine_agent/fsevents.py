"""Host folder changes made visible to inotify in the VM.

virtiofs, 9p and sshfs do not tell the guest kernel when a file changes on the host, so a dev server in a
container that watches its bind mount with inotify would never reload. The host agent watches the host paths
that running containers bind-mount (this module announces them as `watch` events on the host-agent stream)
and posts what changed; for each changed path the guest sets the times the host reported, `utimensat` without
following a link. That is a setattr through the VM's VFS, so inotify fires IN_ATTRIB there (a watch on the
folder reports it with the file's name), the transport refreshes its cached attributes, and the host file is
left as it was: its times are set to the values they already have (only its ctime moves, which the host
agent's watcher sees and recognises as its own echo). Lima's experimental inotify forwarding works the same
way (its guest agent calls Chtimes with the host's mtime).

A path the guest cannot change (a read-only share, EPERM through the transport) is opened for reading and
closed instead: IN_OPEN and IN_CLOSE_NOWRITE, weaker, but still a wake-up for watchers that take any event.
A deleted path cannot be touched; the host reports its parent folder too, whose times change with it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable

from . import inroot, protocol
from .shares import within

log = logging.getLogger("pymachine_agent.fsevents")


class ChangeMirror:
    """The watched set (announced to the host agent through `announce`) and the applier of host changes."""

    def __init__(self, announce: Callable[[dict], None]) -> None:
        self.announce = announce
        self.lock = threading.Lock()
        self.refreshing = threading.Lock()
        self.paths: frozenset[str] = frozenset()
        self.applied = 0

    def refresh(self, current: Callable[[], Iterable[str]]) -> None:
        """Announce the host paths running containers bind-mount (`current()`), when that set changed. One
        refresh at a time, computed and sent in order: racing start/die events cannot send a stale set."""
        with self.refreshing:
            new = frozenset(current())
            with self.lock:
                if new == self.paths:
                    return
                self.paths = new
            self.announce(protocol.watch_event(sorted(new)))

    def _root(self, path: str) -> str | None:
        """The watched bind source `path` lies in: only those may be touched, whatever the host says."""
        with self.lock:
            roots = [r for r in self.paths if within(path, r)]
        return max(roots, key=len) if roots else None

    def apply(self, changes: list[dict]) -> dict[str, int]:
        """Make inotify fire in the VM for each change (see the module doc); returns the counts."""
        applied = skipped = 0
        for change in changes:
            path = os.path.normpath(change["path"])
            root = self._root(path)
            if root is None or not change.get("exists", True):
                skipped += 1
                continue
            try:
                _touch(root, path, (change["atime_ns"], change["mtime_ns"]))
                applied += 1
            except OSError as exc:
                # gone again since the host looked, or a link: nothing in the VM to wake
                log.debug("change of %s not mirrored: %s", path, exc)
                skipped += 1
        self.applied += applied
        return {"applied": applied, "skipped": skipped}


def _touch(root: str, path: str, times: tuple[int, int]) -> None:
    """utimensat(path, times, AT_SYMLINK_NOFOLLOW), its folder found inside `root` by an fd walk so that a
    link in a shared folder cannot steer it at a VM file; a read-only path gets an open and close instead."""
    rel = os.path.relpath(path, root)
    parent, name = os.path.split(rel)
    if rel == ".":
        parent, name = os.path.dirname(root), os.path.basename(root)
        dirfd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        dirfd = inroot.open_in_root(root, parent or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            os.utime(name, ns=times, dir_fd=dirfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                raise
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            os.close(fd)
    finally:
        os.close(dirfd)
