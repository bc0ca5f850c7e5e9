"""`docker load` as the archive arrives: each member is staged in one pass over the stream, nothing committed.

A docker-archive or OCI-layout tar names its layers in manifest.json / index.json, which `docker save` (ours,
moby's) writes last. So the loader cannot wait to know which members are layers: a member that looks like a
layer tar (a tar header, gzip or zstd magic) is unpacked while it streams in, through the same checks as every
layer (layers.unpack: no path escapes, no links out, no device nodes), into its own folder under the load's
tmp/ folder. A compressed layer's bytes are kept as its blob beside it, hashed on the way; an uncompressed
one's (what `docker save` writes) as a tar-split index into the files it unpacked to (tarsplit.py), so its
bytes are written once and hashed once (its digest is its diff_id). Small other members
(configs, manifests) stay in memory, anything else is spooled to a file. Reading the socket, hashing and
unpacking overlap instead of running one after the other (write the body, read it, write the blob, read
it again, unpack).

Only when the whole archive has arrived does archive.load read the manifests, check every digest and commit:
a truncated, malformed or hostile upload leaves nothing in the store (the caller removes the tmp/ folder).
A staged unpack that failed (a hostile entry, a corrupt tar) is only an error if the manifest names that
member as a layer: it is kept and raised then, as the spooling loader did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..digest import file_sha256, sha256
from ..errors import ArchiveError, DigestMismatch, ImageError
from . import layers, oci, tarsplit

_CHUNK = 1 << 20
_IN_MEMORY = 1 << 20  # a member up to this size that is no layer is kept in memory
_IN_MEMORY_TOTAL = 32 << 20  # and all of those together: past that they are spooled
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: what tarfile's "r|*" reads
_TAR_MAGIC_AT = 257  # "ustar" in a POSIX/GNU tar header


def looks_like_layer(head: bytes) -> bool:
    """A layer tar's first bytes (up to 512): gzip, zstd, a ustar header or the zero block of an empty tar."""
    if head.startswith((layers.GZIP_MAGIC, layers.ZSTD_MAGIC)):
        return True
    if len(head) < 512:
        return False
    return head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar" or not head.strip(b"\0")


def media_type_of(head: bytes) -> str:
    return oci.DOCKER_LAYER_GZIP if head.startswith(layers.GZIP_MAGIC) else oci.DOCKER_LAYER_TAR


@dataclass
class Staged:
    """One member of the archive as it arrived: in memory, spooled, or unpacked (with its blob)."""

    data: bytes | None = None
    path: Path | None = None  # the member's bytes as in the archive (spooled, or a compressed layer's blob)
    head: bytes = b""
    digest: str = ""  # sha256 of the member's bytes ("" while unknown)
    layer: Path | None = None  # a folder with diff/ unpacked, to become layers/<hex>/ as a whole
    result: layers.UnpackResult | None = None
    error: Exception | None = None  # unpacking failed: raised if the manifests name this member a layer

    def discard(self) -> None:
        for p in (self.layer, self.path):
            if p is not None and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p is not None:
                p.unlink(missing_ok=True)
        self.layer = self.path = None


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return file_sha256(f)


class _Tee:
    """Reads `head` then `src`, writing every byte read to `fd` (the blob) when set and hashing it when `sha`
    is set. `cut_short`: the archive ended inside this member (tarfile's "unexpected end of data")."""

    def __init__(self, head: bytes, src: BinaryIO, fd: int | None, sha: Any) -> None:
        self._head, self._src, self._fd, self.sha = head, src, fd, sha
        self.cut_short = False

    def read(self, n: int = -1) -> bytes:
        if self.cut_short:
            return b""
        if self._head:
            data = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(data) :]
        else:
            try:
                data = self._src.read(_CHUNK if n < 0 else n)
            except tarfile.ReadError:
                self.cut_short = True
                raise ImageError("the archive ended inside this layer") from None
        if data:
            if self._fd is not None:
                layers.write_all(self._fd, data)
            if self.sha is not None:
                self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class Staging:
    """The members of one archive, staged under `work` (a private folder of the store's tmp/)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.members: dict[str, Staged] = {}
        self._count = 0
        self._in_memory = 0

    # -- filling ----------------------------------------------------------------------------------

    def read_stream(self, fileobj: BinaryIO) -> None:
        """Stage every regular member of the (possibly gzip/bz2/xz-compressed) tar read from `fileobj`."""
        head = layers.read_head(fileobj, 6)
        stream = layers.ForwardReader(fileobj, head)
        # a plain tar (what `docker save` writes) is read member by member straight from the stream; a
        # compressed one (`docker load < x.tar.gz`) through tarfile's stream mode, which decompresses
        mode = "r|*" if head.startswith(_COMPRESSED) else "r:"
        try:
            with tarfile.open(fileobj=stream, mode=mode, bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
                for member in tar:
                    if member.isreg():
                        src = layers.member_data(tar, member)
                        self._stage(member.name.removeprefix("./"), member.size, src)
        except tarfile.TarError as err:
            raise ArchiveError(f"the uploaded file is not a complete tar archive: {err}") from err

    def _stage(self, name: str, size: int, src: BinaryIO) -> None:
        old = self.members.pop(name, None)
        if old is not None:  # a later member of the same name wins, as in a random-access read
            old.discard()
        head = layers.read_head(src, min(512, size))
        if looks_like_layer(head):
            staged = self._unpack(head, src, name)
        elif size <= _IN_MEMORY and self._in_memory + size <= _IN_MEMORY_TOTAL:
            data = head + src.read()
            self._in_memory += len(data)
            staged = Staged(data=data, head=head, digest="sha256:" + sha256(data).hexdigest())
        else:
            staged = self._spool(head, src)
        self.members[name] = staged

    def _new_path(self, suffix: str) -> Path:
        self._count += 1
        return self.work / f"m{self._count}{suffix}"

    def _spool(self, head: bytes, src: BinaryIO) -> Staged:
        path = self._new_path(".blob")
        sha = sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _Tee(head, src, fd, sha).drain()
        finally:
            os.close(fd)
        return Staged(path=path, head=head, digest="sha256:" + sha.hexdigest())

    def _unpack(self, head: bytes, src: BinaryIO, name: str = "") -> Staged:
        """Unpack a layer-looking member. A compressed one's bytes are kept as its blob (hashed on the way);
        an uncompressed one's as a tar-split index into the unpacked files (tarsplit.py: no second copy),
        its digest being the diff_id that unpacking computes anyway."""
        staged = Staged(head=head, layer=self._new_path(""))
        assert staged.layer is not None
        compressed = head.startswith((layers.GZIP_MAGIC, layers.ZSTD_MAGIC))
        staged.layer.mkdir(mode=0o755)
        os.chmod(staged.layer, 0o755)  # becomes layers/<hex>/ as is (mkdir's mode is masked)
        (staged.layer / "diff").mkdir()
        os.chmod(staged.layer / "diff", 0o755)
        fd, recorder = None, None
        if compressed:
            staged.path = self._new_path(".blob")
            fd = os.open(staged.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        else:
            recorder = tarsplit.Recorder(staged.layer)
        try:
            tee = _Tee(head, src, fd, sha256() if compressed else None)
            try:
                staged.result = layers.unpack(tee, staged.layer / "diff", recorder)
                tee.drain()  # bytes after a compressed stream's end still belong to the blob
                if recorder is not None:
                    recorder.finish()
            except (ImageError, OSError) as err:
                staged.error = err
                if recorder is not None:
                    recorder.abort()
                shutil.rmtree(staged.layer, ignore_errors=True)
                staged.layer = None
                with contextlib.suppress(OSError, ImageError):  # the whole member's digest, checked first
                    if recorder is not None and recorder.hashing is not None:
                        recorder.hashing.drain()
                        staged.digest = recorder.hashing.digest
                    else:
                        tee.drain()
                        staged.digest = _file_digest(staged.path) if staged.path else ""
            if tee.cut_short:  # not the layer's fault: the upload stopped
                raise ArchiveError(f"the archive ends inside {name}: the upload was cut short")
            if staged.error is not None:
                return staged
            staged.digest = "sha256:" + tee.sha.hexdigest() if compressed else staged.result.diff_id
        finally:
            if fd is not None:
                os.close(fd)
            if staged.error is not None and staged.path is not None:
                staged.path.unlink(missing_ok=True)
                staged.path = None
        return staged

    # -- reading (archive.load's random access) ---------------------------------------------------

    def get(self, name: str) -> Staged:
        staged = self.members.get(name.removeprefix("./"))
        if staged is None:
            raise ArchiveError(f"the archive has no member {name!r}")
        return staged

    def read(self, name: str) -> bytes:
        staged = self.get(name)
        if staged.data is not None:
            return staged.data
        if staged.path is None:  # a layer-looking member (unpacked, or failed to) is no JSON document either
            raise ArchiveError(f"{name} in the archive is not a JSON document")
        return staged.path.read_bytes()

    def verified(self, name: str, digest: str) -> bytes:
        """A member's bytes, checked against the descriptor's digest."""
        staged = self.get(name)
        data = self.read(name)
        if staged.digest != digest:
            raise DigestMismatch(f"blob {digest} in the archive", digest, staged.digest)
        return data

    def layer(self, name: str, blob_digest: str | None, diff_id: str) -> Staged:
        """The member `name` unpacked, its blob digest and diff_id checked: ready for the store to commit.
        A member that was not unpacked on arrival (it did not look like a tar) is unpacked now."""
        staged = self.get(name)
        if staged.layer is None and staged.error is None:
            self._unpack_later(staged)
        if blob_digest and staged.digest and staged.digest != blob_digest:
            raise DigestMismatch(f"layer blob {blob_digest}", blob_digest, staged.digest)
        if staged.error is not None:
            raise staged.error
        assert staged.result is not None
        if staged.result.diff_id != diff_id:
            raise DigestMismatch("layer (uncompressed)", diff_id, staged.result.diff_id)
        return staged

    def _unpack_later(self, staged: Staged) -> None:
        if staged.path is None:
            assert staged.data is not None
            staged.path = self._new_path(".blob")
            staged.path.write_bytes(staged.data)
        with open(staged.path, "rb") as f:
            again = self._unpack(b"", f)  # a new blob copy is made alongside: the member is small or rare
        staged.discard()  # the digest of the member's bytes stays as computed on arrival
        staged.path, staged.layer = again.path, again.layer
        staged.result, staged.error = again.result, again.error
