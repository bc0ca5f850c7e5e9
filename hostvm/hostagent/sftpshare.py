"""An SFTP server confined to one shared host folder: the host side of the reverse-sshfs transport.

The guest runs `sshfs -o passive` with its stdin/stdout on an SSH exec channel; this server answers on the
other end of that channel, in the host agent's process, as the host agent's user. paramiko's SFTPServer does
the protocol; `ShareSFTP` decides what every path means. It is a security boundary: a container that has
the share mounted must not reach anything outside it on the host. So every path is

- normalised lexically first (`..` cannot climb above the share: `/share/../etc` is refused outright);
- resolved on the host with symlinks followed only where the operation follows them (open, stat, opendir,
  setstat), and refused when the result lies outside the share. A symlink in the share that points to `/` or
  to `~/.ssh` is listed and readable as a link (its target text), but never followed by this server; the
  guest kernel resolves link targets in the guest's own namespace (sshfs runs without `follow_symlinks`);
- for operations on the name itself (lstat, unlink, rename, readlink, symlink, mkdir, rmdir), resolved up
  to its parent folder, which must lie in the share.

Check-then-use is race-free against the guest because this server handles one request at a time and the
guest has no other way to change the share (shares may not nest, see config.check_shares). Hard links are
not offered (paramiko advertises no `hardlink@openssh.com`, so the guest's link(2) fails). Setuid/setgid bits
cannot be set through the share, and ownership cannot be changed: a container must not leave the share's
owner a setuid program. When the host agent runs as root, what the guest creates is chowned to the owner of
the share's folder, so files still belong to the user who owns the share.

Why in-process paramiko rather than OpenSSH's sftp-server: sftp-server cannot be confined to a folder
without root (chroot), it follows `..` and symlinks anywhere its user can read, and Windows has no such
binary; paramiko is already the host agent's SSH stack and runs everywhere Python does.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import socket
import stat
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.sftp import BaseSFTP
from paramiko.sftp_attr import SFTPAttributes

from ..share_nesting import within

log = logging.getLogger(__name__)

SFTP_OK = paramiko.SFTP_OK
DENIED = paramiko.SFTP_PERMISSION_DENIED
MODE_BITS = 0o1777  # what the guest may set: permissions and sticky, never setuid/setgid
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Escape(PermissionError):
    """A path that would leave the share."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EACCES, "outside the share", path)


def lexical(share: str, client_path: str) -> str:
    """The client's path normalised without touching the disk; relative paths start at the share."""
    return posixpath.normpath(posixpath.join(share, client_path or "."))


@dataclass(frozen=True)
class Root:
    """A share as the client names it (`path`, the same path as in the VM) and where it really is (`real`)."""

    path: str
    real: str
    readonly: bool = False
    owner: tuple[int, int] | None = None  # chown what the guest creates to this (uid, gid): set when root

    @classmethod
    def of(cls, path: str, readonly: bool = False) -> Root:
        real = os.path.realpath(path)
        owner = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            st = os.stat(real)
            owner = (st.st_uid, st.st_gid) if st.st_uid != 0 else None
        return cls(posixpath.normpath(path), real, readonly, owner)

    def resolve(self, client_path: str, follow: bool = True) -> str:
        """The host path for `client_path`, or Escape. `follow` follows a symlink in the last component."""
        p = lexical(self.path, client_path)
        if not within(p, self.path):
            raise Escape(client_path)
        rel = p[len(self.path) :].lstrip("/")
        if not rel:
            return self.real
        parent, name = posixpath.split(posixpath.join(self.real, rel))
        real_parent = os.path.realpath(parent)
        if not within(real_parent, self.real):
            raise Escape(client_path)
        full = posixpath.join(real_parent, name)
        if not follow:
            return full
        real = os.path.realpath(full)
        if not within(real, self.real):
            raise Escape(client_path)
        return real


def _code(exc: OSError) -> int:
    return paramiko.SFTPServer.convert_errno(exc.errno)


class Handle(paramiko.SFTPHandle):
    """An open file: positional reads and writes on the descriptor (no Python file object, no seeks)."""

    def __init__(self, fd: int, flags: int) -> None:
        super().__init__(flags)
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, offset: int, length: int) -> bytes | int:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            return _code(exc)

    def write(self, offset: int, data: bytes) -> int:
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            return _code(exc)
        return SFTP_OK

    def stat(self) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.fstat(self.fd))
        except OSError as exc:
            return _code(exc)

    def chattr(self, attr: SFTPAttributes) -> int:
        try:
            _set_attrs(self.fd, attr)
        except OSError as exc:
            return _code(exc)
        return SFTP_OK


def _set_attrs(target: int | str, attr: SFTPAttributes) -> None:
    """SETSTAT/FSETSTAT: size, permissions (no setuid/setgid) and times; an ownership change is refused."""
    st = os.stat(target)
    uid, gid = getattr(attr, "st_uid", None), getattr(attr, "st_gid", None)
    if (uid is not None and uid != st.st_uid) or (gid is not None and gid != st.st_gid):
        raise PermissionError(errno.EPERM, "ownership cannot be changed through the share")
    if attr.st_size is not None and not stat.S_ISDIR(st.st_mode):
        os.truncate(target, attr.st_size)
    if attr.st_mode is not None:
        os.chmod(target, attr.st_mode & MODE_BITS)
    if attr.st_atime is not None and attr.st_mtime is not None:
        os.utime(target, (attr.st_atime, attr.st_mtime))


class ShareSFTP(paramiko.SFTPServerInterface):
    """Every SFTP operation, on paths confined to `root` (see the module docstring for the rules)."""

    def __init__(self, server: Any, root: Root) -> None:
        super().__init__(server)
        self.root = root

    def _own(self, path: str) -> None:
        if self.root.owner is not None:
            os.lchown(path, *self.root.owner)

    def _writable(self) -> None:
        if self.root.readonly:
            raise PermissionError(errno.EROFS, "read-only share")

    def canonicalize(self, path: str) -> str:
        p = lexical(self.root.path, path)
        return p if within(p, self.root.path) else self.root.path

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> Handle | int:
        try:
            if flags & WRITE_FLAGS:
                self._writable()
            real = self.root.resolve(path, follow=True)
            existed = os.path.lexists(real)
            mode = (attr.st_mode if attr.st_mode is not None else 0o666) & MODE_BITS
            fd = os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            if not existed and flags & os.O_CREAT:
                self._own(real)
        except OSError as exc:
            return _code(exc)
        return Handle(fd, flags)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        try:
            real = self.root.resolve(path, follow=True)
            out = []
            for entry in os.scandir(real):
                out.append(SFTPAttributes.from_stat(entry.stat(follow_symlinks=False), entry.name))
            return out
        except OSError as exc:
            return _code(exc)

    def stat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.stat(self.root.resolve(path, follow=True)))
        except OSError as exc:
            return _code(exc)

    def lstat(self, path: str) -> SFTPAttributes | int:
        try:
            return SFTPAttributes.from_stat(os.lstat(self.root.resolve(path, follow=False)))
        except OSError as exc:
            return _code(exc)

    def _do(self, fn: Any, *args: Any) -> int:
        try:
            self._writable()
            fn(*args)
        except OSError as exc:
            return _code(exc)
        return SFTP_OK

    def remove(self, path: str) -> int:
        return self._do(lambda: os.unlink(self.root.resolve(path, follow=False)))

    def rmdir(self, path: str) -> int:
        return self._do(lambda: os.rmdir(self.root.resolve(path, follow=False)))

    def rename(self, oldpath: str, newpath: str) -> int:
        # POSIX semantics (replace the target), which is what the guest's rename(2) expects: editors save so.
        return self._do(
            lambda: os.replace(self.root.resolve(oldpath, follow=False), self.root.resolve(newpath, False))
        )

    posix_rename = rename

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        def make() -> None:
            real = self.root.resolve(path, follow=False)
            os.mkdir(real, (attr.st_mode if attr.st_mode is not None else 0o777) & MODE_BITS)
            self._own(real)

        return self._do(make)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return self._do(lambda: _set_attrs(self.root.resolve(path, follow=True), attr))

    def symlink(self, target_path: str, path: str) -> int:
        # The target is stored as text; this server never follows it out of the share (see resolve).
        def make() -> None:
            real = self.root.resolve(path, follow=False)
            os.symlink(target_path, real)
            self._own(real)

        return self._do(make)

    def readlink(self, path: str) -> str | int:
        try:
            return os.readlink(self.root.resolve(path, follow=False))
        except OSError as exc:
            return _code(exc)


class ShareServer(paramiko.SFTPServer):
    """paramiko's SFTP protocol loop over any socket-like object (an SSH exec channel, a socketpair end),
    without an SSH server around it: the guest's sshfs is the client, the channel its stdin/stdout."""

    def __init__(self, sock: paramiko.Channel | socket.socket, root: Root) -> None:
        BaseSFTP.__init__(self)  # not SubsystemHandler: there is no server-side Transport here
        self.logger = logging.getLogger(__name__ + ".protocol")
        self.ultra_debug = False
        self.next_handle = 1
        self.file_table: dict[bytes, Any] = {}
        self.folder_table: dict[bytes, Any] = {}
        self.server = ShareSFTP(None, root)
        self.sock = sock

    def _log(self, level: int, msg: Any) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", msg)

    def serve(self) -> None:
        """Answer requests until the client goes away; then close every handle it left open."""
        try:
            self.start_subsystem("sftp", None, self.sock)
        finally:
            for f in list(self.file_table.values()):
                f.close()
            self.file_table.clear()
            self.folder_table.clear()
