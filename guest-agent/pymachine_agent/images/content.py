"""The content-addressed half of the image store: blobs by digest and unpacked layers by diff_id, each
written to tmp/ first and renamed into place only once complete and verified. `ImageStore` (store.py) adds
image records, tags and the Docker-facing operations on top."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .. import atomic
from ..errors import DigestMismatch, ImageError
from . import durable, layers, oci, tarsplit
from .oci import copy_verified

_TMP_PREFIX = "work-"
_EMPTY_TMP_AGE = 3600.0  # seconds


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    atomic.write_bytes(path, data)


def digest_hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    return hexpart


class ContentStore:
    """Blobs and layers under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._placed = 0  # layers and blobs put in place since the last flush (flush_placed)
        self._flushing = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise metadata changes between threads and processes sharing the store."""
        with self._lock, open(self.root / "lock", "a+") as lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)

    def tmp_dir(self) -> Path:
        """A new private folder under tmp/ for the caller to fill and remove (what it leaves is removed
        when the store next opens). For anonymous temporary files use `spool_dir()` instead."""
        self._reap_empty_tmp()
        return Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix=_TMP_PREFIX))

    def spool_dir(self) -> Path:
        """One stable folder under tmp/ for `tempfile.TemporaryFile(dir=...)` (request bodies, `save`
        output): unlike `tmp_dir()` nothing is created per call, so nothing is left behind."""
        path = self.root / "tmp" / "spool"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def _reap_empty_tmp(self) -> None:
        # A caller that only put a TemporaryFile in its tmp_dir() leaves an empty folder behind. An empty
        # folder untouched for an hour is such debris (every store caller fills its folder at once, and an
        # anonymous O_TMPFILE file still open in it keeps working after rmdir): drop it, so none pile up.
        cutoff = time.time() - _EMPTY_TMP_AGE
        with os.scandir(self.root / "tmp") as entries:
            for entry in entries:
                if not entry.name.startswith(_TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):  # not empty, or gone already
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.rmdir(entry.path)

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def write_blob(self, data: bytes) -> str:
        digest = "sha256:" + sha256_hex(data)
        path = self.blob_path(digest)
        if not path.exists():
            atomic_write(path, data)
        return digest

    def read_blob(self, digest: str) -> bytes:
        data = self.blob_path(digest).read_bytes()
        if "sha256:" + sha256_hex(data) != digest:
            raise DigestMismatch(f"stored blob {digest}", digest, "sha256:" + sha256_hex(data))
        return data

    def adopt_blob(self, tmp_file: Path, digest: str) -> Path:
        """Move an already verified file into the blob store."""
        path = self.blob_path(digest)
        os.replace(tmp_file, path)
        self._note_placed()
        return path

    def _note_placed(self) -> None:
        with self._lock:
            self._placed += 1

    def flush_placed(self) -> None:
        """Put every layer and blob placed so far on the disk (one syncfs, when any was placed since the last
        flush): called before an image record names them, so that a record never outlives its files' data
        in a power cut (images/durable.py). A second caller waits for a flush in progress, which covers
        what it placed before that flush began."""
        with self._flushing:
            with self._lock:
                placed, self._placed = self._placed, 0
            if placed:
                atomic.sync_filesystem(self.root)

    def layer_root(self, diff_id: str) -> Path:
        return self.root / "layers" / digest_hex(diff_id)

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_root(diff_id) / "layer.json").exists()

    def layer_meta(self, diff_id: str) -> dict[str, Any]:
        return json.loads((self.layer_root(diff_id) / "layer.json").read_text())

    def _write_layer_meta(self, meta: dict[str, Any]) -> None:
        atomic_write(self.layer_root(meta["diff_id"]) / "layer.json", json.dumps(meta, indent=1).encode())

    def add_layer_blob(self, diff_id: str, digest: str, media_type: str) -> None:
        """Remember that blob `digest` (compressed or not) decompresses to layer `diff_id` (for push/save)."""
        with self.locked():
            meta = self.layer_meta(diff_id)
            if meta["blobs"].get(digest) != media_type:
                meta["blobs"][digest] = media_type
                self._write_layer_meta(meta)

    def add_layer(
        self, stream: BinaryIO, expected_diff_id: str | None, blob: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """Unpack one layer tar (gzip/zstd/plain) unless that diff_id is present; returns its meta.

        Unpacks into tmp/ and renames into layers/ only once every entry was accepted and the uncompressed
        digest equals `expected_diff_id`; so a refused or corrupt layer leaves nothing behind."""
        if expected_diff_id and self.has_layer(expected_diff_id):
            if blob:
                self.add_layer_blob(expected_diff_id, *blob)
            return self.layer_meta(expected_diff_id)
        work = self.tmp_dir()
        try:
            os.chmod(work, 0o755)  # becomes layers/<hex>/ as is
            (work / "diff").mkdir()
            os.chmod(work / "diff", 0o755)
            result = layers.unpack(stream, work / "diff")
            if expected_diff_id and result.diff_id != expected_diff_id:
                raise DigestMismatch("layer (uncompressed)", expected_diff_id, result.diff_id)
            return self._place_layer(work, result, blob)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

    def _place_layer(
        self, work: Path, result: layers.UnpackResult, blob: tuple[str, str] | None
    ) -> dict[str, Any]:
        """Rename `work` (diff/ unpacked, verified) to layers/<hex>/ unless that layer arrived meanwhile."""
        meta = {
            "diff_id": result.diff_id,
            "size": result.size,
            "tar_size": result.tar_size,
            "blobs": {blob[0]: blob[1]} if blob else {},
            durable.FLUSHED: True,  # no image names it before flush_placed: never checked at open
        }
        atomic_write(work / "layer.json", json.dumps(meta, indent=1).encode())
        with self.locked():
            dest = self.layer_root(result.diff_id)
            if not (dest / "layer.json").exists():
                if dest.exists():  # debris of an interrupted rename: never referenced, safe to drop
                    shutil.rmtree(dest)
                os.rename(work, dest)
                self._note_placed()
                return meta
        if blob:
            self.add_layer_blob(result.diff_id, *blob)
        return self.layer_meta(result.diff_id)

    def install_layer(
        self, work: Path, result: layers.UnpackResult, blob_file: Path | None, digest: str, media_type: str
    ) -> dict[str, Any]:
        """Commit a layer unpacked and verified beforehand (a streamed load, images/staging.py): its blob
        goes in first, as in `import_layer`, then `work` (holding diff/, and the tar-split index instead of
        a blob file when `blob_file` is None) becomes layers/<hex>/."""
        if blob_file is None:
            return self._place_layer(work, result, (digest, media_type))
        existed = self.has_blob(digest)
        path = self.adopt_blob(blob_file, digest)
        try:
            return self._place_layer(work, result, (digest, media_type))
        except BaseException:
            if not existed:
                path.unlink(missing_ok=True)
            raise

    def import_layer(
        self,
        src: BinaryIO,
        diff_id: str | None,
        blob_digest: str | None,
        media_type: str | None,
        on_chunk: Callable[[int], None] | None = None,
        downloaded: Callable[[], None] | None = None,
        size: int | None = None,
    ) -> dict[str, Any]:
        """Keep a layer blob (verified against `blob_digest` when given) and unpack it (checked against
        `diff_id` when given). The blob stays for push and save; media type is sniffed when not given."""
        work = self.tmp_dir()
        try:
            tmp_blob = work / "blob"
            with open(tmp_blob, "wb") as f:
                what = f"layer blob {blob_digest or diff_id}"
                digest = copy_verified(src, f, blob_digest, what, on_chunk, size)
            if downloaded:
                downloaded()
            if not media_type:
                with open(tmp_blob, "rb") as f:
                    head = f.read(4)
                media_type = (
                    oci.DOCKER_LAYER_GZIP if head.startswith(layers.GZIP_MAGIC) else oci.DOCKER_LAYER_TAR
                )
            # The blob goes in first, so a layer.json never names a blob that a crash kept from arriving
            # (an unreferenced blob is swept instead); it leaves again if the layer is refused.
            existed = self.has_blob(digest)
            path = self.adopt_blob(tmp_blob, digest)
            try:
                with open(path, "rb") as f:
                    return self.add_layer(f, diff_id, (digest, media_type))
            except BaseException:
                if not existed:
                    path.unlink(missing_ok=True)
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def layer_has_blob(self, diff_id: str) -> bool:
        """The layer is here and can give its tar back (a blob file, or its tar-split index)."""
        if not self.has_layer(diff_id):
            return False
        meta = self.layer_meta(diff_id)
        return any(self.has_blob(d) for d in meta["blobs"]) or tarsplit.exists(self.layer_root(diff_id))

    def short_dir(self, diff_id: str) -> Path:
        hexd = digest_hex(diff_id)
        target = f"../layers/{hexd}/diff"
        (self.root / "l").mkdir(exist_ok=True)
        for name in (hexd[:20], hexd):  # the full name only if a prefix ever collided
            link = self.root / "l" / name
            with contextlib.suppress(FileExistsError):
                os.symlink(target, link)
            if os.readlink(link) == target:
                return link
        raise ImageError(f"cannot make a short link for layer {diff_id}")
