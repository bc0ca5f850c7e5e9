"""`docker cp` and `docker export`: a container's files as a tar stream, and a tar stream into them.

Everything runs in the engine's own process, on file descriptors below an fd of the container's root
(`/proc/<pid>/root` of a running container, a detached overlay mount of a stopped one: runtime/detached.py):
paths go through inroot.open_in_root (the container's root as `/`), and walks open each entry with
O_PATH | O_NOFOLLOW and decide from fstat of that very fd what it is, so a directory swapped for a symlink
mid-walk is taken as the symlink it now is and nothing outside the container is ever read or written.
There is no chroot: the old one made every NSS look-up tarfile does for owner names load the image's
/etc/nsswitch.conf and libnss_*.so into a root process (CVE-2019-14271's class). Headers carry numeric ids
and empty names, as moby's FileInfoHeaderNoLookups does, and are built here: tarfile's gettarinfo and its
extraction would call pwd/grp. Both directions stream in pieces of at most 1 MiB.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import shutil
import stat
import tarfile
import time
from collections.abc import Iterable, Iterator

from .errors import ArchiveFailed, ArchiveNotFound
from .inroot import make_dirs, open_in_root, reopen

_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_CHUNK = 1 << 20
_FLUSH = 1 << 16
_BLOCK = tarfile.BLOCKSIZE
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def go_mode(st_mode: int) -> int:
    """A Go os.FileMode (what X-Docker-Container-Path-Stat carries) from a POSIX st_mode."""
    mode = stat.S_IMODE(st_mode)
    if stat.S_ISDIR(st_mode):
        mode |= _GO_DIR
    elif stat.S_ISLNK(st_mode):
        mode |= _GO_SYMLINK
    return mode


def stat_header(info: dict) -> str:
    return base64.b64encode(json.dumps(info).encode()).decode()


def _open(root_fd: int, path: str, follow_last: bool) -> int:
    try:
        return open_in_root(root_fd, path, os.O_PATH, follow_last=follow_last)
    except (FileNotFoundError, NotADirectoryError):
        raise ArchiveNotFound(f"Could not find the file {path} in container") from None


def path_stat(root_fd: int, path: str) -> dict:
    """Docker's stat of `path` (the last component not followed) for X-Docker-Container-Path-Stat."""
    fd = _open(root_fd, path, follow_last=False)
    try:
        st = os.fstat(fd)
        link = os.readlink("", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else ""
    finally:
        os.close(fd)
    mtime = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime)) + "Z"
    name = os.path.basename(path.rstrip("/")) or "/"
    return {"name": name, "size": st.st_size, "mode": go_mode(st.st_mode), "mtime": mtime, "linkTarget": link}


# -- out: a tar of a path ------------------------------------------------------------------------------


def open_source(root_fd: int, path: str) -> tuple[int, str]:
    """The O_PATH fd of what GET /archive sends, and its name in the tar. A trailing `/` or `/.` follows a
    final symlink (the folder's content); otherwise a symlink is sent as itself."""
    follow = path.endswith(("/", "/."))
    fd = _open(root_fd, path, follow_last=follow)
    base = os.path.basename(path.rstrip("/").rstrip(".").rstrip("/")) or "/"
    return fd, base if base != "/" else "."


def _header(name: str, st: os.stat_result, kind: bytes, size: int = 0, link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # never looked up: a name look-up is what loads NSS modules
    info.mtime = int(st.st_mtime)
    info.size = size
    info.linkname = link
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _TarOut:
    """Turns O_PATH fds into tar pieces. Small pieces are gathered up to 64 KiB; file data goes in 1 MiB."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.links: dict[tuple[int, int], str] = {}

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def entry(self, fd: int, name: str) -> Iterator[bytes]:
        """The tar entry of the inode `fd` holds; a directory's children are the caller's."""
        st = os.fstat(fd)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            self.buf += _header(name, st, tarfile.DIRTYPE)
        elif stat.S_ISLNK(mode):
            self.buf += _header(name, st, tarfile.SYMTYPE, link=os.readlink("", dir_fd=fd))
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                self.buf += _header(name, st, tarfile.LNKTYPE, link=self.links[key])
            else:
                if st.st_nlink > 1:
                    self.links[key] = name
                self.buf += _header(name, st, tarfile.REGTYPE, size=st.st_size)
                yield from self._data(fd, st.st_size)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = (
                tarfile.FIFOTYPE
                if stat.S_ISFIFO(mode)
                else tarfile.CHRTYPE
                if stat.S_ISCHR(mode)
                else tarfile.BLKTYPE
            )
            self.buf += _header(name, st, kind)
        # sockets are left out, as tarfile and moby do
        if len(self.buf) >= _FLUSH:
            yield self.take()

    def _data(self, path_fd: int, size: int) -> Iterator[bytes]:
        """Exactly `size` bytes of the file (a file that shrank meanwhile is padded with zeros, one that
        grew is cut), so the stream stays a valid tar whatever a running container does."""
        if self.buf:
            yield self.take()
        fd = reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK)
        try:
            left = size
            while left:
                piece = os.read(fd, min(_CHUNK, left))
                if not piece:
                    piece = bytes(min(_CHUNK, left))
                left -= len(piece)
                yield piece
        finally:
            os.close(fd)
        self.buf += bytes(-size % _BLOCK)


def tar_stream(top_fd: int, name: str, *, include_top: bool = True) -> Iterator[bytes]:
    """The tar of the tree at the O_PATH fd `top_fd` (the caller's to close), entries named below `name`."""
    out = _TarOut()
    stack: list[tuple[int, str, list[str]]] = []
    try:
        if include_top:
            yield from out.entry(top_fd, name)
        if stat.S_ISDIR(os.fstat(top_fd).st_mode):
            dfd = reopen(top_fd, os.O_RDONLY | os.O_DIRECTORY)
            stack.append(
                (dfd, "" if not include_top else name.rstrip("/") + "/", sorted(os.listdir(dfd))[::-1])
            )
        while stack:
            dfd, prefix, names = stack[-1]
            if not names:
                os.close(stack.pop()[0])
                continue
            child = names.pop()
            try:
                cfd = os.open(child, _PATH, dir_fd=dfd)
            except FileNotFoundError:
                continue  # removed since the listing
            try:
                yield from out.entry(cfd, prefix + child)
                if stat.S_ISDIR(os.fstat(cfd).st_mode):
                    sub = reopen(cfd, os.O_RDONLY | os.O_DIRECTORY)
                    stack.append((sub, prefix + child + "/", sorted(os.listdir(sub))[::-1]))
            finally:
                os.close(cfd)
        yield out.take() + bytes(2 * _BLOCK)
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)


# -- in: a tar into a folder ---------------------------------------------------------------------------


class ChunkReader:
    """A file-like `read` over an iterable of byte pieces (a request body), for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = bytearray()  # deleting from the front of a bytearray does not copy the rest

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            piece = next(self._it, None)
            if piece is None:
                break
            self._buf += piece
        n = len(self._buf) if n < 0 else min(n, len(self._buf))
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _member_path(dest: str, name: str) -> str:
    """`name` below `dest`, lexically; a name that climbs out of `dest` is refused (moby's breakoutError)."""
    clean = posixpath.normpath("./" + name.lstrip("/"))
    if clean == ".." or clean.startswith("../"):
        raise ArchiveFailed(f"invalid tar member {name!r}: it climbs out of {dest}", 400)
    return posixpath.join(dest, clean).rstrip("/") if clean != "." else dest


def put_tar(root_fd: int, path: str, chunks: Iterable[bytes], no_overwrite: bool = False) -> None:
    """Extract the (maybe compressed) tar in `chunks` into the folder `path` of the container, as PUT
    /containers/{id}/archive does. Each member's parent is resolved inside the root (created if missing); the
    member itself is made with *at calls on that parent's fd, never following a symlink."""
    dest = _open(root_fd, path, follow_last=True)
    try:
        if not stat.S_ISDIR(os.fstat(dest).st_mode):
            raise ArchiveFailed(f"extraction point is not a directory: {path}", 400)
    finally:
        os.close(dest)
    dest_path = "/" + path.strip("/")
    dir_times: list[tuple[str, int]] = []
    try:
        with tarfile.open(fileobj=ChunkReader(chunks), mode="r|*") as tar:  # type: ignore[call-overload]
            while (m := tar.next()) is not None:
                tar.members.clear()  # stream mode would keep every member's header otherwise
                full = _member_path(dest_path, m.name)
                if full == dest_path:
                    continue  # "." : the destination itself stays as it is
                parent, leaf = posixpath.split(full)
                pfd = make_dirs(root_fd, parent)
                try:
                    _put_member(tar, m, pfd, leaf, root_fd, dest_path, no_overwrite)
                finally:
                    os.close(pfd)
                if m.isdir():
                    dir_times.append((full, int(m.mtime)))
    except tarfile.TarError as err:
        raise ArchiveFailed(f"the archive is not a valid tar: {err}", 400) from err
    for full, mtime in reversed(dir_times):  # children changed the folders' times: set them last
        try:
            fd = open_in_root(root_fd, full, os.O_RDONLY | os.O_DIRECTORY, follow_last=False)
        except OSError:
            continue
        try:
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def _clear(pfd: int, leaf: str, want_dir: bool, no_overwrite: bool) -> bool:
    """Make room for `leaf`; True when an existing directory is kept for a directory member."""
    try:
        st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    is_dir = stat.S_ISDIR(st.st_mode)
    if no_overwrite and is_dir != want_dir:
        what = "directory" if is_dir else "non-directory"
        raise ArchiveFailed(
            f"cannot overwrite {what} {leaf!r} with a {'non-' if is_dir else ''}directory", 400
        )
    if is_dir and want_dir:
        return True
    if is_dir:
        shutil.rmtree(leaf, dir_fd=pfd)  # the fd-based rmtree: follows no symlink
    else:
        os.unlink(leaf, dir_fd=pfd)
    return False


def _put_member(
    tar: tarfile.TarFile, m: tarfile.TarInfo, pfd: int, leaf: str, root_fd: int, dest: str, no_overwrite: bool
) -> None:
    mode = m.mode & 0o7777
    if m.isdir():
        if not _clear(pfd, leaf, True, no_overwrite):
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)  # after chown, which clears setuid/setgid
        finally:
            os.close(fd)
        return
    _clear(pfd, leaf, False, no_overwrite)
    if m.isreg():
        fd = os.open(
            leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd
        )
        try:
            src = tar.extractfile(m)
            while src is not None and (piece := src.read(_CHUNK)):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, mode)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)
        return
    if m.issym():
        os.symlink(m.linkname, leaf, dir_fd=pfd)
    elif m.islnk():
        target = _member_path(dest, m.linkname)
        tparent, tleaf = posixpath.split(target)
        try:
            tfd = open_in_root(root_fd, tparent, os.O_PATH | os.O_DIRECTORY)
        except OSError as err:
            raise ArchiveFailed(f"hard link {m.name!r} to a missing {m.linkname!r}", 400) from err
        try:
            os.link(tleaf, leaf, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        return  # a hard link shares its target's owner, mode and times
    elif m.ischr() or m.isblk() or m.isfifo():
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
        os.mknod(leaf, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
    else:
        return  # other member types (GNU volume headers, …) carry nothing to write
    os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
    if not m.issym():
        fd = os.open(leaf, _PATH, dir_fd=pfd)  # a fifo or device node: never opened for I/O
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)
    os.utime(leaf, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
