"""Host folder changes made visible to inotify in the VM.

virtiofs, 9p and sshfs do not tell the guest kernel when a file changes on the host, so a dev server in a
container that watches its bind mount with inotify would never reload. The host agent watches the host paths
that running containers bind-mount (this module announces them as `watch` events on the host-agent stream)
and posts what changed; for each changed path the guest sets the file's permission bits to the ones the host
reported, on the file itself, never through a link. That is a setattr through the VM's VFS, so inotify fires
IN_ATTRIB there (a watch on the folder reports it with the file's name), the transport refreshes its cached
attributes (size, mtime: readers see the new content), and the host file keeps its mode, times and content;
only its ctime moves, which the host agent's watcher recognises as its own echo.

Why the mode and not the times: Lima's experimental forwarding sets the host's mtime (Chtimes), and so did our
first version, but a change that arrives late (the host saved twice within the forwarding delay, a formatter
after a save) then sets the file back to the first save's mtime under the second save's content — make and
editors take new content for old — and sshfs (SFTP v3 carries whole seconds) rounds the host's mtime down on
every event. A late mode can at worst undo a chmod made in the same fraction of a second.

A path the guest cannot change (a read-only share: EROFS; EPERM through a transport) is opened for reading and
closed instead: IN_OPEN and IN_CLOSE_NOWRITE, weaker, but still a wake-up for watchers that take any event.
A deleted path cannot be touched; the host reports its parent folder too, whose change is what fires.

Before any chmod, every reported path (deleted ones too, and the `touch: false` ones the host sends for a
flood it carries by folders) is taken afresh by the VM's virtiofs caches (revalidate.py): virtiofsd runs with
cache=always, so without that a host save by rename would keep the old file under the name, and the chmod
would land on it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable

from . import inroot, protocol, revalidate
from .shares import within

log = logging.getLogger("pymachine_agent.fsevents")
# How long a folder no container binds any more stays watched: virtiofsd's cache timeout (hostvm/shares.py
# CACHE_TIMEOUT_S), for as long as the guest may still hold names its containers looked up there.
LINGER_S = 30.0


class ChangeMirror:
    """The watched set (announced to the host agent through `announce`) and the applier of host changes."""

    def __init__(
        self,
        announce: Callable[[dict], None],
        fresh: Callable[[list[str]], int] = revalidate.refresh,
        linger: float = LINGER_S,
        cached: Callable[[list[str]], list[str]] = revalidate.served,
    ) -> None:
        self.announce = announce
        self.fresh = fresh
        self.linger, self.cached = linger, cached
        self.lock = threading.Lock()
        self.refreshing = threading.Lock()
        self.paths: frozenset[str] = frozenset()
        self.bound: frozenset[str] = frozenset()  # what running containers bind now
        self.leaving: dict[str, float] = {}  # bound until recently: watched until then (monotonic)
        self.timer: threading.Timer | None = None
        self.applied = 0
        self.refreshed = 0

    def refresh(self, current: Callable[[], Iterable[str]]) -> None:
        """Announce the host paths running containers bind-mount (`current()`), when that set changed. One
        refresh at a time, computed and sent in order: racing start/die events cannot send a stale set."""
        with self.refreshing:
            bound = frozenset(current())
            now = time.monotonic()
            with self.lock:
                # a path no container binds any more stays watched while the VM's virtiofs caches may still
                # hold what its containers read (revalidate.py): a host edit made before the next `docker run`
                # of the same folder must reach those caches too
                for path in self.cached(sorted(self.bound - bound)):
                    self.leaving[path] = now + self.linger
                self.bound = bound
                self.leaving = {p: t for p, t in self.leaving.items() if t > now and p not in bound}
                new = bound | frozenset(self.leaving)
                if self.leaving:
                    self._again(min(self.leaving.values()) - now, current)
                if new == self.paths:
                    return
                self.paths = new
            self.announce(protocol.watch_event(sorted(new)))

    def _again(self, delay: float, current: Callable[[], Iterable[str]]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = threading.Timer(max(delay, 0.0) + 0.1, self.refresh, (current,))
        self.timer.daemon = True
        self.timer.start()

    def _root(self, path: str) -> str | None:
        """The watched bind source `path` lies in: only those may be touched, whatever the host says."""
        with self.lock:
            roots = [r for r in self.paths if within(path, r)]
        return max(roots, key=len) if roots else None

    def apply(self, changes: list[dict]) -> dict[str, int]:
        """Make inotify fire in the VM for each change (see the module doc); returns the counts."""
        named = [(os.path.normpath(c["path"]), c) for c in changes]
        mine = [(path, root, c) for path, c in named if (root := self._root(path)) is not None]
        applied, skipped = 0, len(changes) - len(mine)
        # the names first: the chmod must reach the file the host has under the name now (see the module doc)
        self.refreshed += self.fresh([path for path, _, _ in mine])
        for path, root, change in mine:
            if not change.get("exists", True) or not change.get("touch", True):
                skipped += 1
                continue
            try:
                _touch(root, path, change["mode"])
                applied += 1
            except OSError as exc:
                # gone again since the host looked, or a link: nothing in the VM to wake
                log.debug("change of %s not mirrored: %s", path, exc)
                skipped += 1
        self.applied += applied
        return {"applied": applied, "skipped": skipped}


def _touch(root: str, path: str, mode: int) -> None:
    """chmod(path, mode) on the file itself: its folder found inside `root` by an fd walk and the name opened
    O_PATH|O_NOFOLLOW, so a link in a shared folder cannot steer it at a VM file (a link has no mode of its
    own on Linux: nothing to do). A read-only path gets an open and close instead."""
    rel = os.path.relpath(path, root)
    if rel == ".":
        parent, name = os.path.dirname(root), os.path.basename(root)
        dirfd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        parent, name = os.path.split(rel)
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dirfd = inroot.open_in_root(root_fd, parent or ".", os.O_PATH | os.O_DIRECTORY)
        finally:
            os.close(root_fd)
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    finally:
        os.close(dirfd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, f"{path} is a link")
        magic = f"/proc/self/fd/{fd}"  # the inode this fd holds, whatever its name points to by now
        try:
            os.chmod(magic, mode)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EPERM, errno.EACCES):
                raise
            os.close(os.open(magic, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    finally:
        os.close(fd)
