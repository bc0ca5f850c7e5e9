"""Synchronized shares: applying what the other side sent to this side's tree, safely (both sides run it).

Every name is reached one component at a time from the share's own fd with O_NOFOLLOW: a link in the tree
(made by a container, or by the user on the host) is copied as a link and never followed, so a change the
other side sends can only ever touch the share. A file arrives in a temp file in its folder (its mode, owner
and the sender's mtime set first) and is renamed over the old one, so a reader never sees half a file and a
watcher sees one IN_MOVED_TO. What this side applies is recorded in `known` before the rename, so its own
watcher takes the event for the echo it is and does not send it back.

Conflicts follow synclogic's rule: an entry arriving for a path with a change of this side's own that was not
sent yet is a conflict; the loser is kept as `NAME.conflict-<side>-<stamp>`, which syncs like a new file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import BinaryIO

from . import synclogic
from .synclogic import Known, Sig

log = logging.getLogger("pymachine_agent.syncfs")
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# getattr: the host agent imports this on Windows too, where sync shares are not offered (no dir_fd calls)
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | CLOEXEC


class Applier:
    def __init__(self, root: str, side: str, known: Known, owner: tuple[int, int] | None = None) -> None:
        """`side` is this side's name (host | guest); `owner` the uid and gid every entry made here gets
        (None: whoever runs this)."""
        self.root, self.side, self.known, self.owner = root, side, known, owner
        self.other = "guest" if side == "host" else "host"
        self.conflicts = 0

    # -- fd walking ----------------------------------------------------------------------------------------
    def _parent(self, rel: str, create: bool = True) -> tuple[int, str]:
        """An fd of `rel`'s folder (folders made on the way when `create`) and its last name."""
        parts = rel.split("/")
        fd = os.open(self.root, DIR_FLAGS)
        try:
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._own(part, fd)
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _own(self, name: str, dirfd: int) -> None:
        if self.owner is not None:
            os.chown(name, *self.owner, dir_fd=dirfd, follow_symlinks=False)

    # -- operations ------------------------------------------------------------------------------------------
    def put(self, header: dict, inp: BinaryIO) -> str:
        """Apply one `put` frame (a file's content is read from `inp`). Returns what was done."""
        rel = synclogic.check_rel(header.get("path"))
        sig = synclogic.sig_from_json(header.get("sig"))
        size = int(header.get("size") or 0) if sig[0] == "f" else 0
        if synclogic.ignored(rel):
            _skip(inp, size)
            return "ignored"
        current = synclogic.sig_of(self.root, rel)
        if current == sig:
            _skip(inp, size)
            self.known.set(rel, sig)
            return "same"
        target = rel
        if synclogic.crossed(current, synclogic.base_of(header)):
            self.conflicts += 1
            if self.side == "guest":  # the incoming version is the host's
                incoming_wins = synclogic.host_wins(sig, current)
            else:
                incoming_wins = not synclogic.host_wins(current, sig)
            if incoming_wins:
                self.rename(rel, synclogic.conflict_name(rel, self.side), record=False)
                log.warning("conflict on %s: the %s's version wins, ours is kept aside", rel, self.other)
            else:
                target = synclogic.conflict_name(rel, self.other)
                log.warning("conflict on %s: ours wins, the %s's is kept as %s", rel, self.other, target)
        dirfd, name = self._parent(target)
        try:
            if sig[0] == "f":
                self._file(dirfd, name, sig, inp, size)
            elif sig[0] == "d":
                self._dir(dirfd, name, sig)
            else:
                self._link(dirfd, name, sig)
        finally:
            os.close(dirfd)
        if target == rel:
            self.known.set(rel, sig)  # what our watcher will see: an echo, not sent back
        return "conflict" if target != rel else "applied"

    def _file(self, dirfd: int, name: str, sig: Sig, inp: BinaryIO, size: int) -> None:
        tmp = f"{synclogic.TEMP_PREFIX}{os.getpid()}-{name}"[:255]
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | CLOEXEC, 0o600, dir_fd=dirfd
        )
        try:
            left = size
            while left:
                data = inp.read(min(left, synclogic.CHUNK))
                if not data:
                    raise EOFError("the sync stream ended inside a file")
                os.write(fd, data)
                left -= len(data)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            os.fchmod(fd, sig[3])
            os.utime(fd, ns=(sig[2], sig[2]))
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dirfd)
            raise
        os.close(fd)
        self._clear_dir(dirfd, name)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)

    def _dir(self, dirfd: int, name: str, sig: Sig) -> None:
        try:
            st = os.lstat(name, dir_fd=dirfd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dirfd)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=dirfd)
            self._own(name, dirfd)
        os.chmod(name, sig[1], dir_fd=dirfd, follow_symlinks=False)

    def _link(self, dirfd: int, name: str, sig: Sig) -> None:
        tmp = f"{synclogic.TEMP_PREFIX}{os.getpid()}-{name}"[:255]
        try:
            os.unlink(tmp, dir_fd=dirfd)
        except FileNotFoundError:
            pass
        os.symlink(sig[1], tmp, dir_fd=dirfd)
        self._own(tmp, dirfd)
        self._clear_dir(dirfd, name)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)

    def _clear_dir(self, dirfd: int, name: str) -> None:
        """A folder where a file or link is to go (its kind changed on the other side) is removed first."""
        try:
            if stat.S_ISDIR(os.lstat(name, dir_fd=dirfd).st_mode):
                self._remove_agreed(dirfd, name, name)
        except FileNotFoundError:
            pass

    def delete(self, rel: str, base: Sig | None = None) -> None:
        """Delete `rel` when it is still what the sender had (`base`; a deletion never beats a change), a
        folder with everything below it that this side has no unsent change of (those are kept, and so are
        the folders that hold them)."""
        rel = synclogic.check_rel(rel)
        if synclogic.crossed(synclogic.sig_of(self.root, rel), base):
            return  # changed here meanwhile: kept, and sent by our watcher
        try:
            dirfd, name = self._parent(rel, create=False)
        except (FileNotFoundError, NotADirectoryError):
            self.known.forget(rel)
            return
        try:
            self._remove_agreed(dirfd, name, rel)
        finally:
            os.close(dirfd)

    def _remove_agreed(self, dirfd: int, name: str, rel: str) -> bool:
        """Remove `name` in `dirfd` (known as `rel`) unless it holds unsent changes; True when it is gone."""
        try:
            st = os.lstat(name, dir_fd=dirfd)
        except FileNotFoundError:
            self.known.forget(rel)
            return True
        current = synclogic.signature(st, os.readlink(name, dir_fd=dirfd) if stat.S_ISLNK(st.st_mode) else "")
        if not stat.S_ISDIR(st.st_mode):
            if self.known.unsent_change(rel, current):
                return False  # changed here since: kept, and sent by our watcher
            os.unlink(name, dir_fd=dirfd)
            self.known.forget(rel)
            return True
        sub = os.open(name, DIR_FLAGS, dir_fd=dirfd)
        try:
            gone = all([self._remove_agreed(sub, child, f"{rel}/{child}") for child in os.listdir(sub)])
        finally:
            os.close(sub)
        if not gone:
            return False
        try:
            os.rmdir(name, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            return False  # something appeared meanwhile
        self.known.forget(rel)
        return True

    def move(self, rel: str, new: str, base: Sig | None, content: str = "") -> bool:
        """The other side renamed `rel` (whose signature was `base`) to `new`: rename it here too, when this
        side still has just that at `rel` and nothing at `new`. False when it cannot: `rel` is then deleted as
        for a `delete` (kept if changed here) and the sender is asked for `new`'s content (`want`)."""
        rel, new = synclogic.check_rel(rel), synclogic.check_rel(new)
        if base is None or base[0] not in ("f", "l") or synclogic.ignored(new):
            return False
        try:
            if synclogic.sig_of(self.root, rel) != base or synclogic.sig_of(self.root, new) is not None:
                return False
            if base[0] == "f" and (not content or synclogic.digest(self.root, rel) != content):
                return False  # the same size and time, other content: not what the sender renamed
            src_fd, src_name = self._parent(rel, create=False)
            try:
                dst_fd, dst_name = self._parent(new)
                try:
                    os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
        except OSError as exc:  # a folder on the way turned into a link or a file: send the content instead
            log.info("move of %s to %s not applied: %s", rel, new, exc)
            return False
        self.known.forget(rel)
        self.known.set(new, base)  # what our watcher will see there: an echo
        return True

    def apply_move(self, frame: dict) -> bool:
        """A `move` frame: renamed here, or (False: the sender is to be asked for the content) `path`
        deleted as for a `delete`."""
        base = synclogic.base_of(frame)
        if self.move(frame["path"], frame["to"], base, str(frame.get("digest") or "")):
            return True
        self.delete(frame["path"], base)
        return False

    def rename(self, rel: str, new: str, record: bool = True) -> None:
        """Move `rel` aside to `new` (a conflict's losing version) in the same folder."""
        synclogic.check_rel(rel)
        synclogic.check_rel(new)
        dirfd, name = self._parent(rel, create=False)
        try:
            os.rename(name, os.path.basename(new), src_dir_fd=dirfd, dst_dir_fd=dirfd)
        finally:
            os.close(dirfd)
        if record:
            self.known.set(new, synclogic.sig_of(self.root, new))
        self.known.forget(rel)


def _skip(inp: BinaryIO, size: int) -> None:
    while size:
        size -= len(synclogic.read_exact(inp, min(size, synclogic.CHUNK)))
