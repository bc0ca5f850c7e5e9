"""Safe unpacking of one layer tar into its own folder, in overlayfs' on-disk form.

Every entry is placed relative to an open directory fd of the layer root, one path component at a time with
O_NOFOLLOW, so no symlink (from this tar or planted earlier in it) is ever followed while writing. Refused,
with an UnsafeLayerError naming the entry: absolute names, `..` components, a path through a symlink (Docker
would follow a symlink that stays inside the layer; we are stricter), a hardlink whose target is outside the
archive, device nodes other than the char 0/0 whiteout. Whiteouts `.wh.NAME` become char 0/0 devices and
`.wh..wh..opq` the `trusted.overlay.opaque=y` xattr, as moby's overlay whiteout converter does.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..digest import sha256
from ..errors import ImageError, UnsafeLayerError
from . import tarsplit

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
# overlayfs interprets these itself (redirects, metacopy): a tar must never plant them.
_REFUSED_XATTR_PREFIXES = ("trusted.overlay.", "security.selinux")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream, as in the image config's rootfs.diff_ids
    tar_size: int  # bytes of the uncompressed tar
    size: int  # bytes of regular-file content (Docker's layer Size)


class HashingReader:
    """Counts and hashes what passes through `read`, so the diff_id needs no second pass over the tar; and
    hands it to a tar-split recorder when there is one."""

    def __init__(self, raw: BinaryIO, recorder: tarsplit.Recorder | None = None) -> None:
        self._raw = raw
        self.sha = sha256()
        self.count = 0
        self.recorder = recorder
        if recorder is not None:
            recorder.hashing = self

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha.update(data)
        self.count += len(data)
        if self.recorder is not None:
            self.recorder.feed(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class ForwardReader:
    """A stream (`head` first, then `raw`) that tarfile may treat as seekable, because it only ever seeks
    forward when reading members in order: its random-access mode ("r:") then reads member data straight
    from here. Its stream mode ("r|") passes every byte through a buffer that it joins and slices again on
    each read; under TCG those copies cost as much as hashing the layer. `read(n)` returns n bytes unless the
    stream ends (tarfile counts a short read as "unexpected end of data").

    `raw` may hand over memoryviews (api.http.BodyFile: no copy of a request body). `read` gives bytes, what
    tarfile parses headers from; `read1` (member data, read by our own code) passes views on, unless `views`
    is False (for gzip and zstd readers, which want bytes)."""

    def __init__(self, raw: BinaryIO, head: bytes = b"", exact: bool = True, views: bool = True) -> None:
        self._raw, self._head, self._pos = raw, head, 0
        self._exact = exact  # False: read(n) may return fewer bytes (for readers that loop anyway)
        self._views = views

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            pos += self._pos
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("this stream cannot seek from its end")
        if pos < self._pos:
            raise io.UnsupportedOperation(f"this stream cannot seek back (from {self._pos} to {pos})")
        while self._pos < pos and self.read(min(_CHUNK, pos - self._pos)):
            pass
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if not self._exact and n is not None and n >= 0:
            return self.read1(n)
        if n is None or n < 0:
            pieces = [self._head, *iter(lambda: self._raw.read(_CHUNK), b"")]
        else:
            pieces, want = [], n
            if self._head:
                pieces.append(self._head[:want])
                want -= len(pieces[0])
            while want > 0 and (piece := self._raw.read(want)):
                pieces.append(piece)
                want -= len(piece)
        self._head = self._head[n:] if n is not None and n >= 0 else b""
        data = bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)  # bytes(b) is b itself
        self._pos += len(data)
        return data

    def read1(self, n: int) -> bytes:
        """At most n bytes (b"" at the end) from one read of the source: no gathering, no copy."""
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
        else:
            data = self._raw.read(n)
            if not self._views and isinstance(data, memoryview):
                data = bytes(data)
        self._pos += len(data)
        return data


class _MemberData:
    """A regular member's bytes read straight from the archive's ForwardReader, in the pieces the source
    hands over (tarfile's file object adds two buffers and copies)."""

    def __init__(self, stream: ForwardReader, size: int) -> None:
        self._stream, self._left = stream, size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        if self._left <= 0 or n == 0:
            return b""
        data = self._stream.read1(min(n, self._left))
        if not data:
            raise tarfile.ReadError("unexpected end of data")
        self._left -= len(data)
        return data


def member_data(tar: tarfile.TarFile, m: tarfile.TarInfo) -> BinaryIO:
    """A reader of a regular member's data, read in order (tarfile's own reader for sparse members and for
    archives tarfile reads itself)."""
    stream = tar.fileobj
    if isinstance(stream, ForwardReader) and not m.issparse():
        stream.seek(m.offset_data)
        return _MemberData(stream, m.size)  # type: ignore[return-value]
    src = tar.extractfile(m)
    assert src is not None
    return src  # type: ignore[return-value]


def read_head(src: BinaryIO, n: int) -> bytes:
    """The first n bytes of `src`, fewer only where it ends (a socket or pipe may hand over less per read)."""
    head = b""
    while len(head) < n and (more := src.read(n - len(head))):
        head += more
    return head


def decompressed(raw: BinaryIO) -> BinaryIO:
    """The uncompressed stream of a gzip, zstd or plain tar, told apart by magic bytes."""
    head = read_head(raw, 4)
    plain = not head.startswith((GZIP_MAGIC, ZSTD_MAGIC))
    stream = ForwardReader(raw, head, exact=False, views=plain)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[arg-type,return-value]
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ImageError(
                "this layer is zstd-compressed and the guest's Python has no 'zstandard' module; "
                "push the image with gzip layers instead"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(stream)  # type: ignore[no-any-return]
    return stream  # type: ignore[return-value]


def clean_parts(name: str, entry: str) -> tuple[str, ...]:
    """Split an archive path into components, refusing absolute paths and `..` (pure; unit-tested)."""
    if name.startswith("/"):
        raise UnsafeLayerError(entry, "absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(entry, "'..' in path")
    return parts


class _Unpacker:
    _CACHED_DIRS = 256  # open directory fds kept: tar entries come grouped by folder

    def __init__(self, dest: Path, recorder: tarsplit.Recorder | None = None) -> None:
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.recorder = recorder
        self.dir_times: dict[tuple[str, ...], int] = {}
        self.size = 0
        self._fds: dict[tuple[str, ...], int] = {}

    def close(self) -> None:
        self._forget()
        os.close(self.root_fd)

    def _forget(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def open_dir(self, parts: tuple[str, ...], entry: str, create: bool) -> int:
        """A new fd of the directory `parts` below the root, never following a symlink; creates missing
        dirs. Starts from the deepest already opened ancestor (each was reached the same safe way)."""
        if parts in self._fds:
            return os.dup(self._fds[parts])
        start, base = 0, self.root_fd
        for i in range(len(parts) - 1, 0, -1):
            if parts[:i] in self._fds:
                start, base = i, self._fds[parts[:i]]
                break
        fd = os.dup(base)
        try:
            for i in range(start, len(parts)):
                comp, shown = parts[i], "/".join(parts[: i + 1])
                try:
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise UnsafeLayerError(entry, f"'{shown}' does not exist") from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeLayerError(entry, f"path goes through symlink '{shown}'")
                if not stat.S_ISDIR(st.st_mode):
                    raise UnsafeLayerError(entry, f"'{shown}' is not a directory")
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            if parts:
                if len(self._fds) >= self._CACHED_DIRS:
                    self._forget()
                self._fds[parts] = os.dup(fd)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def clear(self, parent: int, leaf: str, parts: tuple[str, ...], keep_dir: bool) -> bool:
        """Remove what `leaf` (at `parts`) holds so a later tar entry replaces it; True if an existing dir
        was kept."""
        try:
            st = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and keep_dir:
            return True
        if self.recorder is not None:
            self.recorder.removing(parts, parent, leaf, is_dir)
        if is_dir:
            self._forget()  # cached fds may point into the tree removed here
            shutil.rmtree(leaf, dir_fd=parent)
        else:
            os.unlink(leaf, dir_fd=parent)
        return False

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = clean_parts(m.name, m.name)
        if not parts:  # "./": the layer root itself
            if m.isdir():
                self._meta(self.root_fd, m, is_dir=True)
                self.dir_times[()] = _mtime_ns(m)
            return
        *dirs, leaf = parts
        if leaf.startswith(WHITEOUT_PREFIX):
            parent = self.open_dir(tuple(dirs), m.name, create=True)
            try:
                self._whiteout(parent, leaf, m)
            finally:
                os.close(parent)
            return
        if m.ischr() or m.isblk():
            if not (m.ischr() and m.devmajor == 0 and m.devminor == 0):
                kind = "char" if m.ischr() else "block"
                raise UnsafeLayerError(m.name, f"device node ({kind} {m.devmajor}:{m.devminor})")
        elif not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            raise UnsafeLayerError(m.name, f"unsupported tar entry type {m.type!r}")
        parent = self.open_dir(tuple(dirs), m.name, create=True)
        try:
            self._place(tar, parent, leaf, parts, m)
        finally:
            os.close(parent)

    def _whiteout(self, parent: int, leaf: str, m: tarfile.TarInfo) -> None:
        if leaf == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if leaf.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # AUFS bookkeeping (.wh..wh.plnk, …): meaningless for overlay, skipped as moby does
        target = leaf[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):  # `.wh...` would otherwise delete the parent of the layer folder
            raise UnsafeLayerError(m.name, f"whiteout of {target or 'an empty name'!r}")
        self.clear(parent, target, (*clean_parts(m.name, m.name)[:-1], target), keep_dir=False)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        os.chown(target, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)

    def _place(
        self, tar: tarfile.TarFile, parent: int, leaf: str, parts: tuple[str, ...], m: tarfile.TarInfo
    ) -> None:
        if m.isdir():
            if not self.clear(parent, leaf, parts, keep_dir=True):
                os.mkdir(leaf, 0o700, dir_fd=parent)
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
            try:
                self._meta(fd, m, is_dir=True)
            finally:
                os.close(fd)
            self.dir_times[parts] = _mtime_ns(m)
            return
        if m.islnk():
            self._hardlink(parent, leaf, m)
            return
        self.clear(parent, leaf, parts, keep_dir=False)
        if m.issym():
            os.symlink(m.linkname, leaf, dir_fd=parent)
            os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
            self._xattrs(None, m, parent=parent, leaf=leaf)
            t = _mtime_ns(m)
            os.utime(leaf, ns=(t, t), dir_fd=parent, follow_symlinks=False)
            return
        if m.ischr() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFIFO
            os.mknod(leaf, kind | 0o600, os.makedev(0, 0), dir_fd=parent)
            os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
            os.chmod(leaf, m.mode & 0o7777, dir_fd=parent, follow_symlinks=True)  # not a symlink: just made
            t = _mtime_ns(m)
            os.utime(leaf, ns=(t, t), dir_fd=parent, follow_symlinks=False)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(leaf, flags, 0o600, dir_fd=parent)
        try:
            if self.recorder is not None and not m.issparse():
                self.recorder.content(parts, m.size)  # the bytes read next are this file's, kept here
            src = member_data(tar, m)
            while chunk := src.read(_CHUNK):
                write_all(fd, chunk)
            self.size += m.size
            self._meta(fd, m, is_dir=False)
        finally:
            os.close(fd)

    def _hardlink(self, parent: int, leaf: str, m: tarfile.TarInfo) -> None:
        target = clean_parts(m.linkname, m.name)
        if not target:
            raise UnsafeLayerError(m.name, "hardlink to the layer root")
        if target == clean_parts(m.name, m.name):
            return  # a link to itself: the file is already there
        src_parent = self.open_dir(target[:-1], m.name, create=False)
        try:
            try:
                st = os.stat(target[-1], dir_fd=src_parent, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeLayerError(
                    m.name, f"hardlink target '{m.linkname}' is not in this layer"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeLayerError(m.name, "hardlink to a directory")
            self.clear(parent, leaf, clean_parts(m.name, m.name), keep_dir=False)
            os.link(target[-1], leaf, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(src_parent)

    def _meta(self, fd: int, m: tarfile.TarInfo, is_dir: bool) -> None:
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid/setgid bits
        self._xattrs(fd, m)
        if not is_dir:
            t = _mtime_ns(m)
            os.utime(fd, ns=(t, t))

    @staticmethod
    def _xattrs(fd: int | None, m: tarfile.TarInfo, parent: int | None = None, leaf: str = "") -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith(_REFUSED_XATTR_PREFIXES):
                continue
            raw = value.encode("utf-8", "surrogateescape")
            if fd is not None:
                os.setxattr(fd, name, raw)
            else:  # symlink: only reachable through a /proc path on its O_PATH fd; user.* cannot go on links
                try:
                    lfd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                    try:
                        os.setxattr(f"/proc/self/fd/{lfd}", name, raw, follow_symlinks=False)
                    finally:
                        os.close(lfd)
                except OSError as err:
                    if err.errno not in (errno.EPERM, errno.ENOTSUP):
                        raise

    def finish(self) -> None:
        # Directory mtimes last, deepest first: creating children above would have changed them.
        for parts in sorted(self.dir_times, key=len, reverse=True):
            t = self.dir_times[parts]
            try:
                fd = self.open_dir(parts, "/".join(parts), create=False)
            except UnsafeLayerError:
                continue  # a later entry replaced the folder (by a file, link or whiteout)
            try:
                os.utime(fd, ns=(t, t))
            finally:
                os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _mtime_ns(m: tarfile.TarInfo) -> int:
    return int(m.mtime * 1_000_000_000)


def unpack(raw: BinaryIO, dest: Path, recorder: tarsplit.Recorder | None = None) -> UnpackResult:
    """Unpack a (gzip/zstd/plain) layer tar from `raw` into the existing empty folder `dest`; `recorder`
    (for an uncompressed tar) keeps it as an index into the files (tarsplit.py).

    Raises UnsafeLayerError naming the first refused entry; the caller discards `dest` on any error (the
    store unpacks into a temp folder and renames it into place only on success)."""
    hashing = HashingReader(decompressed(raw), recorder)
    unpacker = _Unpacker(dest, recorder)
    try:
        # "r:" on a forward-only reader: member data is read straight from the stream (see ForwardReader)
        with tarfile.open(fileobj=ForwardReader(hashing), mode="r:", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for member in tar:
                try:
                    unpacker.entry(tar, member)
                except OSError as err:  # e.g. a uid the kernel refuses: still say which entry
                    raise ImageError(f"cannot unpack layer entry {member.name!r}: {err}") from err
        hashing.drain()  # trailing zero blocks after the end marker are part of the diff_id
        unpacker.finish()
    except tarfile.TarError as err:
        raise ImageError(f"the layer is not a valid tar archive: {err}") from err
    finally:
        unpacker.close()
    return UnpackResult(hashing.digest, hashing.count, unpacker.size)


def dir_size(path: Path) -> int:
    """Bytes of regular files below `path` (hardlinks counted once), not following symlinks."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
