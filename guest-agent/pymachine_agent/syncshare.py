"""The guest side of a synchronized share: a copy of a host folder on the VM's disk, kept in sync both ways.

The host agent runs `python3 -m pymachine_agent.syncshare --store DIR --path PATH --uid U --gid G` as root on
an exec channel of the machine's SSH link and speaks synclogic's frames on its stdin/stdout:

    guest → host   manifest {entries}        once, first: what the copy holds now
    host → guest   rename / put / delete      the start-up plan, then every host change
    host → guest   pull {paths}               → put … then pulled
    host → guest   mount                      → mounted (the copy bind-mounted at PATH) or error
    guest → host   put / delete               every change made in the VM (inotify), from the start on

The copy lives in DIR (/var/lib/pymachine/sync/<id>) and is bind-mounted at the share's own path, nosuid,
nodev, so that the guest agent's bind rules (shares.py) treat it like any share, and a container's reads,
walks and inotify watches run on the VM's disk. Entries made from the host belong to the share owner's uid
and gid (U, G), as over virtiofs. Change detection is inotify on every folder of the copy (ctypes, stdlib);
events are coalesced for COALESCE seconds and each changed path is compared with the signature last agreed
on (synclogic.Known): what this process applied itself is not sent back. An inotify queue overflow rescans
the copy. Files are sent when written and closed (IN_CLOSE_WRITE), not at every write.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from . import mountinfo, synclogic
from .syncfs import Applier
from .synclogic import Known

log = logging.getLogger("pymachine_agent.syncshare")
COALESCE = 0.05
IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
IN_ONLYDIR, IN_DONTFOLLOW, IN_ISDIR = 0x01000000, 0x02000000, 0x40000000
WATCH_MASK = (IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_ONLYDIR | IN_DONTFOLLOW)  # fmt: skip
MIN_WATCHES = 524288  # a copy of a big tree needs one watch per folder
OUTER_WAIT = 300.0  # a resumed TCG guest mounts its shares again within seconds to minutes under load
SHARE_FSTYPES = ("virtiofs", "9p", "fuse.sshfs")
_EVENT = struct.Struct("iIII")


class Inotify:
    """inotify on every folder of a tree; `changed()` gives the relative paths touched since the last call."""

    def __init__(self, root: str) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.root = root
        self.wds: dict[int, str] = {}
        self.overflowed = False

    def add_tree(self, rel: str) -> None:
        """Watch the folder `rel` and every folder below it. Each folder is watched *before* it is listed: a
        name made after the watch fires an event, one made before is in the listing. (os.walk lists first,
        so a folder made between its parent's listing and its parent's watch was neither: `mkdir -p a/b &&
        echo x > a/b/f` in a container under load lost b's watch, and f never reached the host.)"""
        todo = [os.path.join(self.root, rel) if rel else self.root]
        while todo:
            dirpath = todo.pop()
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(dirpath), WATCH_MASK)
            if wd < 0:
                log.warning("cannot watch %s: %s", dirpath, os.strerror(ctypes.get_errno()))
                continue
            self.wds[wd] = os.path.relpath(dirpath, self.root)
            try:
                with os.scandir(dirpath) as it:
                    todo += [e.path for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue  # gone meanwhile: its deletion comes as an event

    def read(self, timeout: float | None) -> set[str]:
        if not select.select([self.fd], [], [], timeout)[0]:
            return set()
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return set()
        out: set[str] = set()
        pos = 0
        while pos < len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
            name = (
                data[pos + _EVENT.size : pos + _EVENT.size + size]
                .rstrip(b"\0")
                .decode(errors="surrogateescape")
            )
            pos += _EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                self.overflowed = True
                continue
            if mask & IN_IGNORED:
                self.wds.pop(wd, None)
                continue
            folder = self.wds.get(wd)
            if folder is None or not name:
                continue
            rel = os.path.normpath(os.path.join(folder, name))
            if synclogic.ignored(rel):
                continue
            out.add(rel)
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self.add_tree(rel)  # a new folder: watched, and what it already holds is sent too
                out.update(_below(self.root, rel))
        return out


def _below(root: str, rel: str) -> set[str]:
    found = set()
    for dirpath, dirs, files in os.walk(os.path.join(root, rel)):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


class Session:
    def __init__(
        self, store: str, path: str, owner: tuple[int, int], inp: BinaryIO, out: BinaryIO, outer: str = ""
    ) -> None:
        self.store, self.path, self.inp, self.out, self.outer = store, path, inp, out, outer
        self.known = Known()  # filled in serve(), once the watches are set
        self.applier = Applier(store, "guest", self.known, owner)
        self.lock = threading.Lock()  # the tree and `known` (applier vs watcher), never held while writing
        self.out_lock = threading.Lock()  # one writer of the output stream at a time

    def send(self, header: dict) -> None:
        with self.out_lock:
            synclogic.write_frame(self.out, header)
            self.out.flush()

    def watch(self, watcher: Inotify) -> None:
        while True:
            changed = watcher.read(None)
            deadline = time.monotonic() + COALESCE
            while (left := deadline - time.monotonic()) > 0:
                changed |= watcher.read(left)
            if watcher.overflowed:
                watcher.overflowed = False
                with self.lock:
                    changed |= set(synclogic.manifest(self.store)) | set(self.known.entries)
            self.flush(changed)

    def flush(self, changed: set[str]) -> None:
        """Send what changed: deletions, then entries shallowest first."""
        puts, deletes = [], []
        with self.lock:
            for rel in sorted(changed):
                current = synclogic.sig_of(self.store, rel)
                if self.known.is_echo(rel, current):
                    continue
                if current is None:
                    if rel in self.known.entries:
                        deletes.append((rel, self.known.entries[rel]))
                        self.known.forget(rel)
                    continue
                puts.append(rel)
            # a rename goes as a move, not as its content again (the host asks for it if it cannot)
            moved, deletes, puts = synclogic.split_moves(self.store, deletes, puts, self.known)
        puts.sort(key=lambda r: (r.count("/"), r))
        with self.out_lock:
            for rel, before in deletes:
                synclogic.write_frame(self.out, {"op": "delete", "path": rel, "base": list(before)})
            for frame in moved:
                synclogic.write_frame(self.out, frame)
            synclogic.send_entries(self.out, self.store, puts, self.known, self.lock)
            self.out.flush()

    def serve(self) -> int:
        watcher = Inotify(self.store)
        watcher.add_tree("")
        # walked after the watches are set: a file made in between is in the manifest or fires an event
        self.known.entries = synclogic.manifest(self.store)
        with self.lock:
            entries = {rel: synclogic.sig_to_json(sig) for rel, sig in self.known.entries.items()}
        self.send({"op": "manifest", "version": synclogic.SYNC_VERSION, "entries": entries})
        threading.Thread(target=self.watch, args=(watcher,), name="sync-watch", daemon=True).start()
        while True:
            try:
                frame = synclogic.read_frame(self.inp)
            except EOFError:
                return 0  # the host agent went (stop, link lost): it reconciles at its next connect
            op = frame["op"]
            if op in ("put", "delete", "rename"):
                with self.lock:
                    try:
                        if op == "put":
                            self.applier.put(frame, self.inp)
                        elif op == "delete":
                            self.applier.delete(frame["path"], synclogic.base_of(frame))
                        else:
                            self.applier.rename(frame["path"], synclogic.check_rel(frame["to"]), record=False)
                    except (OSError, ValueError) as exc:  # one entry that cannot be applied: said, not fatal
                        log.warning("%s %s not applied: %s", op, frame.get("path"), exc)
                        self.send({"op": "error", "error": f"{op} {frame.get('path')}: {exc}"})
            elif op == "move":
                with self.lock:
                    try:
                        done = self.applier.apply_move(frame)
                    except (OSError, ValueError) as exc:
                        log.warning("move %s not applied: %s", frame.get("path"), exc)
                        done = False
                if not done:
                    self.send({"op": "want", "path": frame.get("to")})
            elif op == "want":  # a move the host could not make: send that entry's content
                rel = synclogic.check_rel(frame.get("path"))
                with self.lock:
                    self.known.forget(rel)
                self.flush({rel})
            elif op == "pull":
                paths = [synclogic.check_rel(p) for p in frame.get("paths") or []]
                with self.out_lock:
                    synclogic.send_entries(self.out, self.store, paths, self.known, self.lock, base=False)
                    synclogic.write_frame(self.out, {"op": "pulled"})
                    self.out.flush()
            elif op == "mark":  # everything before it is applied (frames are read and applied in order)
                self.send({"op": "marked", "n": frame.get("n")})
            elif op == "mount":
                error = bind_mount(self.store, self.path, self.outer)
                self.send({"op": "error", "error": error} if error else {"op": "mounted"})
            else:
                self.send({"op": "error", "error": f"unknown op {op!r}"})


def share_mounted(outer: str) -> bool:
    """The live share `outer` is mounted (its own filesystem, the top one at that path: not the guest's
    folder or tmpfs left there while it is unmounted around a save)."""
    try:
        on_it = [fstype for point, fstype in mountinfo.mounts() if point == outer]
    except OSError:
        return False
    return bool(on_it) and on_it[-1] in SHARE_FSTYPES


def bind_mount(store: str, path: str, outer: str = "", wait: float = OUTER_WAIT) -> str:
    """Bind the copy at the share's path, nosuid,nodev (once: a resumed machine has it already). A sync
    share inside a live share (`outer`) is bound only once that share is mounted: after a resume the guest
    mounts it again while the host agent already connects, and a bind made first would end up under it."""
    deadline = time.monotonic() + wait
    while outer and not share_mounted(outer):
        if time.monotonic() > deadline:
            return f"the share {outer} that holds {path} is not mounted in the VM (waited {wait:.0f} s)"
        time.sleep(0.2)
    try:
        os.makedirs(path, 0o755, exist_ok=True)
        a, b = os.stat(store), os.stat(path)
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
            return ""
        for argv in (["mount", "--bind", store, path], ["mount", "-o", "remount,bind,nosuid,nodev", path]):
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                return f"{' '.join(argv)}: {done.stderr.strip()}"
    except OSError as exc:
        return str(exc)
    return ""


def raise_watch_limit() -> None:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches", "r+") as fh:
            if int(fh.read().strip()) < MIN_WATCHES:
                fh.seek(0)
                fh.write(str(MIN_WATCHES))
    except (OSError, ValueError) as exc:
        log.info("inotify watch limit not raised: %s", exc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pymachine_agent.syncshare")
    ap.add_argument("--store", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--uid", type=int, required=True)
    ap.add_argument("--gid", type=int, required=True)
    ap.add_argument("--outer", default="", help="the live share this one lies in (bound once it is mounted)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="syncshare %(levelname)s %(message)s")
    os.makedirs(args.store, 0o755, exist_ok=True)
    os.chown(args.store, args.uid, args.gid)
    raise_watch_limit()
    session = Session(
        args.store, args.path, (args.uid, args.gid), sys.stdin.buffer, sys.stdout.buffer, args.outer
    )
    return session.serve()


if __name__ == "__main__":
    sys.exit(main())
