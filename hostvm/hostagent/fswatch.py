"""The host side of change events: watch exactly the host paths that containers bind-mount, tell the guest.

The guest agent announces the bind sources of its running containers that lie in shares (`watch` events on
its host-agent stream, the whole set each time); this module watches each of them with the watchdog library
(inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) — recursively for a folder, the
parent folder filtered to one name for a file — never the whole home. Events are coalesced for `coalesce`
seconds, each changed path is stat'ed once, and the batch goes to the guest (`POST /pymachine/v1/fs-events`)
with every path's current permission bits, which the guest sets again on its side so that inotify fires there
(see guest-agent/pymachine_agent/fsevents.py, also for why not the times).

Echoes: the guest's chmod to the same mode reaches the host file through the transport (an attribute event
here, the ctime moves), and a container's own write shows up here as well. A path is only sent when
its signature (inode, size, mtime, mode) differs from what was last sent for it, so the echo of what we sent
stops after one round instead of ping-ponging.

Bounds: at most `max_roots` watched paths, and on Linux a budget of folders (each is one inotify watch,
counted against fs.inotify.max_user_watches): a path over budget is not watched and says so with the sysctl
that raises the limit.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pymachine_agent import protocol

from ..share_nesting import within

log = logging.getLogger(__name__)
SIGNATURES_KEPT = 20_000  # paths whose last-sent signature is remembered (oldest forgotten first)
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


def default_dir_budget() -> int | None:
    """Folders we may watch on Linux: half of this user's inotify watches (other programs need some too)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(MAX_USER_WATCHES) as fh:
            return max(1, int(fh.read().strip()) // 2)
    except (OSError, ValueError):
        return 4096


def _count_dirs(root: str, limit: int) -> int:
    """Folders under `root` (itself included), counting stops past `limit`."""
    count = 0
    for _dirpath, _dirs, _files in os.walk(root):
        count += 1
        if count > limit:
            break
    return count


_CHANGES = ("created", "deleted", "modified", "moved", "closed", "attrib")  # not opened, closed_no_write


def _schedule(observer: Any, handler: Any, path: str, recursive: bool) -> Any:
    """Schedule changes only: opens and read-only closes (a container reading a share) are left out at the
    source where watchdog can (≥ 4, `event_filter`); Debian 12's python3-watchdog 2.2 gets them filtered in
    the handler."""
    from watchdog import events as ev

    names = [f"{kind}{what}Event" for kind in ("File", "Dir") for what in
             ("Created", "Deleted", "Modified", "Moved", "Closed", "Attrib")]  # fmt: skip
    wanted = [getattr(ev, n) for n in names if hasattr(ev, n)]
    try:
        return observer.schedule(handler, path, recursive=recursive, event_filter=wanted)
    except TypeError:
        return observer.schedule(handler, path, recursive=recursive)


class _Handler:
    """watchdog calls `dispatch` on its emitter threads. The folder is watched at its real path (a link is not
    followed; macOS's /tmp is /private/tmp) and events are turned back into the path the guest named."""

    def __init__(self, note: Callable[[str, bool], None], folder: str) -> None:
        self.note = note
        self.folder, self.real = folder, os.path.realpath(folder)

    def _named(self, path: str) -> str:
        if self.real != self.folder and within(path, self.real):
            return self.folder + path[len(self.real) :]
        return path

    def dispatch(self, event: Any) -> None:
        if event.event_type not in _CHANGES:
            return
        structural = event.event_type in ("created", "deleted", "moved")
        self.note(self._named(os.fsdecode(event.src_path)), structural)
        dest = getattr(event, "dest_path", "")
        if dest:
            self.note(self._named(os.fsdecode(dest)), True)


class _Root:
    """One watched bind source: a folder watched recursively, or a file through its folder's watch."""

    def __init__(self, path: str, watch: Any, handler: _Handler, folders: int, is_dir: bool) -> None:
        self.path, self.watch, self.handler, self.folders, self.is_dir = path, watch, handler, folders, is_dir

    def covers(self, path: str) -> bool:
        return within(path, self.path) if self.is_dir else path == self.path


class FsWatcher:
    def __init__(
        self,
        send: Callable[[list[dict]], None],
        allowed_roots: Callable[[], list[str]],
        warn: Callable[[str, str], None] = lambda message, hint: None,
        coalesce: float = 0.05,
        max_roots: int = 64,
        dir_budget: int | None = -1,
        max_batch: int = 1000,
        skipped: Callable[[], list[str]] = lambda: [],
    ) -> None:
        """`send(changes)` posts one batch to the guest; `allowed_roots()` are the machine's share folders
        (a path the guest names outside them is never watched); `warn(message, hint)` reports a refusal;
        `skipped()` are folders whose changes are never sent (sync shares inside a watched share: the sync
        carries them, and an event there would chmod the guest's copy under the sync's feet)."""
        self.send = send
        self.skipped = skipped
        self.allowed_roots = allowed_roots
        self.warn = warn
        self.coalesce = coalesce
        self.max_roots = max_roots
        self.max_batch = max_batch
        self.dir_budget = default_dir_budget() if dir_budget == -1 else dir_budget
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.roots: dict[str, _Root] = {}
        self.refused: dict[str, str] = {}  # path → why it is not watched
        self.pending: dict[str, float] = {}  # path → monotonic time of its first event in this batch
        self.sent: OrderedDict[str, tuple | None] = OrderedDict()
        self.stats = {"batches": 0, "sent": 0, "echoes": 0, "skipped": 0, "last_delay": None}
        self.observer: Any = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fs-changes", daemon=True)
        self.thread.start()
        self._wanted: list[str] | None = None  # the newest set asked for, applied by the fs-watch thread
        self._asked = threading.Event()
        threading.Thread(target=self._apply_asked, name="fs-watch", daemon=True).start()

    # -- what is watched ---------------------------------------------------------------------------------
    def _observer(self) -> Any:
        if self.observer is None:
            from watchdog.observers import Observer  # imported here: a host without it still runs machines

            self.observer = Observer()
            self.observer.start()
        return self.observer

    def _allowed(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(within(real, os.path.realpath(r)) for r in self.allowed_roots())

    def request(self, paths: list[str]) -> None:
        """`set_paths` on a thread of its own (walking a big tree takes seconds, and the caller is the loop
        that carries port events); only the newest set asked for is applied."""
        with self.lock:
            self._wanted = list(paths)
        self._asked.set()

    def _apply_asked(self) -> None:
        while not self.stopping:
            self._asked.wait()
            self._asked.clear()
            with self.lock:
                paths, self._wanted = self._wanted, None
            if paths is not None and not self.stopping:
                self.set_paths(paths)

    def set_paths(self, paths: list[str]) -> None:
        """Watch exactly `paths` from now on (the guest's whole current set)."""
        wanted = {os.path.normpath(p) for p in paths if os.path.isabs(p)}
        with self.lock:
            gone = [p for p in self.roots if p not in wanted]
            for p in gone:
                root = self.roots.pop(p)
                try:
                    if any(r.watch == root.watch for r in self.roots.values()):
                        # two files of one folder share its watch: drop only this one's handler
                        self.observer.remove_handler_for_watch(root.handler, root.watch)
                    else:
                        self.observer.unschedule(root.watch)
                except (KeyError, OSError):  # already gone
                    pass
            self.refused = {p: why for p, why in self.refused.items() if p in wanted}
            new = sorted(p for p in wanted if p not in self.roots and p not in self.refused)
        for path in new:
            self._add(path)

    def _refuse(self, path: str, message: str, hint: str) -> None:
        with self.lock:
            self.refused[path] = message
        self.warn(message, hint)

    def _add(self, path: str) -> None:
        if not self._allowed(path):
            self._refuse(path, f"not watching {path}: it is not in a share of this machine", "")
            return
        if len(self.roots) >= self.max_roots:
            self._refuse(
                path,
                f"not watching {path}: {self.max_roots} bind mounts are watched already",
                "changes made on the host under it do not reach inotify in containers",
            )
            return
        is_dir = os.path.isdir(path)
        folders = 0
        if is_dir and self.dir_budget is not None:
            with self.lock:
                left = self.dir_budget - sum(r.folders for r in self.roots.values())
            folders = _count_dirs(path, left)
            if folders > left:
                self._refuse(
                    path,
                    f"not watching {path}: more than {left} folders left in the inotify budget",
                    "raise it: sysctl fs.inotify.max_user_watches=524288 (then restart the container)",
                )
                return
        target = path if is_dir else os.path.dirname(path)
        handler = _Handler(self._note, target)
        try:
            watch = _schedule(self._observer(), handler, handler.real, is_dir)
        except ImportError:
            # a host without watchdog still runs machines; it only has no change events
            self._refuse(
                path,
                f"not watching {path}: the watchdog library is not installed",
                "pip install watchdog (Debian: apt install python3-watchdog), then restart the machine",
            )
            return
        except OSError as exc:
            hint = ""
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                hint = "raise the inotify limits: sysctl fs.inotify.max_user_watches=524288"
            self._refuse(path, f"not watching {path}: {exc}", hint)
            return
        with self.lock:
            self.roots[path] = _Root(path, watch, handler, folders, is_dir)
        log.info("watching %s for changes", path)

    def watched(self) -> list[str]:
        with self.lock:
            return sorted(self.roots)

    # -- events → batches --------------------------------------------------------------------------------
    def _note(self, path: str, structural: bool) -> None:
        if any(within(path, s) for s in self.skipped()):
            with self.lock:
                self.stats["skipped"] += 1  # (status shows it: changes the sync carries itself)
            return
        with self.lock:
            wanted = [p for p, root in self.roots.items() if root.covers(path)]
            if not wanted:
                return
            now = time.monotonic()
            self.pending.setdefault(path, now)
            parent = os.path.dirname(path)
            if structural and any(within(parent, p) for p in wanted):
                # a created/deleted/moved name changes its folder: the folder is what a deletion can touch
                self.pending.setdefault(parent, now)
            self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
            time.sleep(self.coalesce)  # let a burst (an editor's save, a git checkout) land in one batch
            with self.lock:
                batch, self.pending = self.pending, {}
            try:
                self._flush(batch)
            except Exception as exc:  # noqa: BLE001 - the link dropped mid-post: this batch is lost, go on
                log.info("change batch not delivered: %s", exc)

    def _flush(self, batch: dict[str, float]) -> None:
        paths = sorted(batch)
        quiet: set[str] = set()
        if len(paths) > self.max_batch:
            # a flood (npm install or a build writing into the share from a container, a big checkout): the
            # folders carry the events, one chmod each instead of one per file; the files still go, as
            # `touch: false`, for the guest to take them afresh from the host (its virtiofs caches names)
            with self.lock:
                roots = list(self.roots.values())
            folders = {p if not any(r.covers(os.path.dirname(p)) for r in roots) else os.path.dirname(p)
                       for p in paths}  # fmt: skip
            quiet = set(paths) - folders
            paths = sorted(folders | quiet)
            self.stats["collapsed"] = self.stats.get("collapsed", 0) + 1
        changes = []
        for path in paths:
            try:
                st: os.stat_result | None = os.lstat(path)
            except OSError:
                st = None
            sig = None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
            with self.lock:
                if path in self.sent and self.sent[path] == sig:
                    self.stats["echoes"] += 1  # our own chmod (or a change the guest made) coming back
                    continue
                self.sent[path] = sig
                self.sent.move_to_end(path)
                while len(self.sent) > SIGNATURES_KEPT:
                    self.sent.popitem(last=False)
            changes.append(protocol.fs_change(path, st, touch=path not in quiet))
        for start in range(0, len(changes), protocol.MAX_FS_CHANGES):
            self.send(changes[start : start + protocol.MAX_FS_CHANGES])
        if changes:
            self.stats["batches"] += 1
            self.stats["sent"] += len(changes)
            self.stats["last_delay"] = round(time.monotonic() - min(batch.values()), 3)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"paths": sorted(self.roots), "refused": dict(self.refused), **self.stats}

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify()
        self._asked.set()
        if self.observer is not None:
            self.observer.stop()
