"""An uncompressed layer's tar kept as an index into its unpacked files (as containers/storage's tar-split),
not as a second copy of every byte.

`docker load` of an uncompressed layer (what `docker save` writes) wrote each byte twice: into the layer's
blob (blobs/sha256/<diff_id>, kept only to give the same bytes back to `save` and `push`) and into the file
it unpacks to. Under TCG each write of the body costs the guest about as much as hashing it. So a layer that
`load` unpacks from an uncompressed tar keeps, in its folder, `tar-split.raw` (the tar's own bytes: headers,
padding, end blocks, sparse members' data: everything that is no regular file's content, in order) and
`tar-split.json` (for each regular file, how many raw bytes come before it, the file holding its content,
relative to the layer folder, and its size). `SplitTar` gives the original tar back, byte for byte: the raw
bytes from the index, each content from its file (by sendfile where the reader can).

Layer folders are not written after they are committed (overlayfs mounts diff/ as a read-only lower dir).
While unpacking, an entry that replaces or removes a file recorded earlier (the same name twice in one tar, a
whiteout of it, a folder replaced) would take that content away: the recorder first keeps the file as a hard
link under tar-split.d/ and points the index there. Reading back opens each file without following symlinks
and checks it is a regular file of the recorded size; the layer's digest is not re-checked on every save,
as the blob's was not either.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImageError

if TYPE_CHECKING:
    from .layers import HashingReader

RAW = "tar-split.raw"
INDEX = "tar-split.json"
KEPT = "tar-split.d"
_VERSION = 1
_CHUNK = 1 << 20
_SENDFILE_MIN = 64 * 1024  # smaller contents are read and written with the headers (one chunk, not many)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[str, ...]


def exists(layer_dir: Path) -> bool:
    return (layer_dir / INDEX).is_file()


class Recorder:
    """Fed every byte of the uncompressed tar in order (layers.HashingReader); told by the unpacker which
    of them are a regular file's content (`content`), and before an entry removes a path (`removing`)."""

    def __init__(self, layer_dir: Path) -> None:
        self.layer_dir = layer_dir
        self._raw = open(layer_dir / RAW, "xb")  # noqa: SIM115 - closed by finish/abort
        self._raw_pending = 0  # raw bytes since the last file
        self._skip = 0  # bytes still to come that are the current file's content
        self._segments: list[list] = []  # [raw bytes before, path relative to layer_dir, size]
        self._refs: dict[Parts, int] = {}  # a file's path in diff/ → its segment, while it is there
        self._kept = 0
        self.hashing: HashingReader | None = None  # the reader feeding this (set by layers.unpack)

    def feed(self, data: bytes | memoryview) -> None:
        if self._raw.closed:  # aborted: the caller drains the rest only to learn its digest
            return
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        if data:
            self._raw.write(data)
            self._raw_pending += len(data)

    def content(self, parts: Parts, size: int) -> None:
        """The next `size` bytes fed are the content of diff/<parts> (just created, a regular file)."""
        if self._skip:
            raise ImageError("tar-split: a file's content started inside another's")
        if size <= 0:
            return
        self._refs[parts] = len(self._segments)
        self._segments.append([self._raw_pending, "/".join(("diff", *parts)), size])
        self._raw_pending, self._skip = 0, size

    def removing(self, parts: Parts, parent: int, leaf: str, is_dir: bool) -> None:
        """diff/<parts> (`leaf` in the folder `parent`: a file, or a folder and all below it) is about to be
        removed or replaced: keep the contents recorded there as hard links. A folder is walked (fds, no
        symlink followed), which costs what removing it costs anyway."""
        if not self._refs:
            return
        if not is_dir:
            if parts in self._refs:
                self._keep(parts, parent, leaf)
            return
        for dirpath, _dirs, files, dfd in os.fwalk(leaf, dir_fd=parent):
            base = (*parts[:-1], *dirpath.split("/"))
            for name in files:
                if (*base, name) in self._refs:
                    self._keep((*base, name), dfd, name)

    def _keep(self, parts: Parts, parent: int, leaf: str) -> None:
        segment = self._segments[self._refs.pop(parts)]
        kept_dir = self.layer_dir / KEPT
        kept_dir.mkdir(mode=0o700, exist_ok=True)
        self._kept += 1
        os.link(leaf, kept_dir / str(self._kept), src_dir_fd=parent, follow_symlinks=False)
        segment[1] = f"{KEPT}/{self._kept}"

    def finish(self) -> None:
        if self._skip:
            raise ImageError("tar-split: the tar ended inside a file's content")
        self._raw.close()
        index = {"version": _VERSION, "segments": self._segments, "tail": self._raw_pending}
        (self.layer_dir / INDEX).write_text(json.dumps(index, separators=(",", ":")))

    def abort(self) -> None:
        self._raw.close()


class _Files:
    """Opens the files an index names below `layer_dir`, each folder reached without following a symlink;
    the last folder's fd is kept (a tar lists a folder's files together)."""

    def __init__(self, layer_dir: Path) -> None:
        self.layer_dir = layer_dir
        self._dirs: list[str] | None = None
        self._fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._dirs = -1, None

    def _folder(self, dirs: list[str]) -> int:
        if dirs != self._dirs:
            self.close()
            fd = os.open(self.layer_dir, _DIR_FLAGS)
            try:
                for d in dirs:
                    nfd = os.open(d, _DIR_FLAGS, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._dirs = fd, dirs
        return self._fd

    def open(self, rel: str, size: int) -> int:
        """An fd of layer_dir/rel, checked: a regular file of `size` bytes (ImageError naming it if not)."""
        *dirs, leaf = rel.split("/")
        try:
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._folder(dirs))
        except OSError as err:
            raise ImageError(f"layer file {rel} is missing or not reachable: {err}") from err
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            os.close(fd)
            what = f"{st.st_size} bytes" if stat.S_ISREG(st.st_mode) else "not a regular file"  # of `size`
            raise ImageError(f"layer file {rel} changed since the layer was loaded ({what}, not {size})")
        return fd


class SplitTar(io.RawIOBase):
    """The layer's original tar, rebuilt. `send(write, sendfile)` writes it to a response (contents of 64 KiB
    and more by sendfile); `read` serves readers that want bytes (push compresses it)."""

    def __init__(self, layer_dir: Path) -> None:
        super().__init__()
        self.layer_dir = layer_dir
        try:
            index = json.loads((layer_dir / INDEX).read_text())
        except (OSError, ValueError) as err:
            raise ImageError(f"the layer's tar index {layer_dir / INDEX} is unreadable: {err}") from err
        if index.get("version") != _VERSION:
            raise ImageError(f"the layer's tar index has version {index.get('version')}, not {_VERSION}")
        self._segments: list[list] = index["segments"]
        self._tail: int = index["tail"]
        self._raw = open(layer_dir / RAW, "rb")  # noqa: SIM115 - closed by close()
        self._files = _Files(layer_dir)
        self._pieces: Iterator[bytes] | None = None
        self._left = b""

    @property
    def size(self) -> int:
        return sum(r + s for r, _p, s in self._segments) + self._tail

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        self._files.close()
        super().close()

    def check(self) -> None:
        """Every file the index names is still there as recorded (ImageError naming the first that is not):
        `save` checks before its first byte, so that a failure is still a status, not a cut archive; the
        image store at open, for a layer a crash may have left incomplete (images/durable.py)."""
        raw = sum(r for r, _p, _s in self._segments) + self._tail
        have = os.fstat(self._raw.fileno()).st_size
        if have != raw:
            raise ImageError(f"the layer's {RAW} holds {have} bytes, not the {raw} its index records")
        for _raw, rel, size in self._segments:
            os.close(self._files.open(rel, size))

    def _read_raw(self, n: int) -> bytes:
        data = self._raw.read(n)
        if len(data) != n:
            raise ImageError(f"the layer's {RAW} ended {n - len(data)} bytes short")
        return data

    def send(self, write: Callable[[bytes], None], sendfile: Callable[[int, int], None]) -> None:
        for raw, rel, size in self._segments:
            if raw:
                write(self._read_raw(raw))
            fd = self._files.open(rel, size)
            try:
                if size >= _SENDFILE_MIN:
                    sendfile(fd, size)
                else:
                    write(_read_exact(fd, size, rel))
            finally:
                os.close(fd)
        if self._tail:
            write(self._read_raw(self._tail))

    def _generate(self) -> Iterator[bytes]:
        for raw, rel, size in self._segments:
            if raw:
                yield self._read_raw(raw)
            fd = self._files.open(rel, size)
            try:
                left = size
                while left:
                    chunk = os.read(fd, min(_CHUNK, left))
                    if not chunk:
                        raise ImageError(f"layer file {rel} ended {left} bytes short")
                    left -= len(chunk)
                    yield chunk
            finally:
                os.close(fd)
        if self._tail:
            yield self._read_raw(self._tail)

    def read(self, n: int = -1) -> bytes:
        if self._pieces is None:
            self._pieces = self._generate()
        if n is None or n < 0:
            return self._left + b"".join(self._pieces)
        while not self._left:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._left = piece
        data, self._left = self._left[:n], self._left[n:]
        return data


def _read_exact(fd: int, size: int, rel: str) -> bytes:
    pieces, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise ImageError(f"layer file {rel} ended {left} bytes short")
        pieces.append(chunk)
        left -= len(chunk)
    return b"".join(pieces)
