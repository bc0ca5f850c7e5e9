"""On-disk image store. Layout under `root`:

    blobs/sha256/<hex>          content-addressed blobs: image configs, layer tars as received (gzip or plain)
    layers/<diff hex>/diff/     one unpacked layer (overlayfs lowerdir form), shared by every image using it
    layers/<diff hex>/layer.json  {"diff_id", "size", "tar_size", "blobs": {digest: media type}}
    images/<id hex>.json        {"id", "layers": [diff_id…], "parent", "last_tag_time"}
    repositories.json           {"tags": {"docker.io/library/x:tag": id}, "digests": {"…/x@sha256:…": id}}
    tmp/                        unpacks and downloads in progress (same filesystem, so rename is atomic)

Layer reference counts are derived from the image records rather than kept as counters, so a crash between
two writes can never leave a count that drifts; a layer no image references is deleted with its blobs.
"""

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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from . import layers, oci, views
from .errors import DigestMismatch, ImageError, ImageNotFound, InvalidReference
from .oci import copy_verified
from .reference import Reference, is_id_prefix, is_image_id, parse

Progress = Callable[[dict[str, Any]], None]
InUse = Callable[[str], Iterable[str]]


def _noprogress(_msg: dict[str, Any]) -> None:
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    return hexpart


class ImageStore:
    def __init__(self, root: Path | str, insecure_registries: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.insecure_registries = set(insecure_registries)
        for sub in ("blobs/sha256", "layers", "images", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # tmp/ holds only work of a running process: what is there now is debris of a previous agent
        for leftover in (self.root / "tmp").iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self._lock = threading.RLock()
        self._active = 0

    # ---- low level: locking, blobs, layers, records -------------------------------------------------
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
        """A new private folder under tmp/ (removed when the store next opens, if the caller did not)."""
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

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
        return path

    def layer_root(self, diff_id: str) -> Path:
        return self.root / "layers" / _hex(diff_id)

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
            meta = {
                "diff_id": result.diff_id,
                "size": result.size,
                "tar_size": result.tar_size,
                "blobs": {blob[0]: blob[1]} if blob else {},
            }
            atomic_write(work / "layer.json", json.dumps(meta, indent=1).encode())
            with self.locked():
                dest = self.layer_root(result.diff_id)
                if not (dest / "layer.json").exists():
                    if dest.exists():  # debris of an interrupted rename: never referenced, safe to drop
                        shutil.rmtree(dest)
                    os.rename(work, dest)
                    return meta
            if blob:
                self.add_layer_blob(result.diff_id, *blob)
            return self.layer_meta(result.diff_id)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)

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
            with open(tmp_blob, "rb") as f:
                meta = self.add_layer(f, diff_id, (digest, media_type))
            self.adopt_blob(tmp_blob, digest)
            return meta
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def layer_has_blob(self, diff_id: str) -> bool:
        return self.has_layer(diff_id) and any(self.has_blob(d) for d in self.layer_meta(diff_id)["blobs"])

    def _image_path(self, image_id: str) -> Path:
        return self.root / "images" / (_hex(image_id) + ".json")

    def record(self, image_id: str) -> dict[str, Any]:
        try:
            return json.loads(self._image_path(image_id).read_text())
        except FileNotFoundError:
            raise ImageNotFound(f"No such image: {image_id}") from None

    def image_ids(self) -> list[str]:
        return ["sha256:" + p.stem for p in (self.root / "images").glob("*.json")]

    def repositories(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads((self.root / "repositories.json").read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("tags", {})
        data.setdefault("digests", {})
        return data

    def _write_repositories(self, data: dict[str, dict[str, str]]) -> None:
        atomic_write(self.root / "repositories.json", json.dumps(data, indent=1, sort_keys=True).encode())

    def add_image(
        self,
        config_bytes: bytes,
        tags: Iterable[Reference] = (),
        digests: Iterable[Reference] = (),
        parent: str = "",
    ) -> str:
        """Register an image whose layers are all unpacked already; returns its ID (sha256 of the config)."""
        config = json.loads(config_bytes)
        diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
        missing = [d for d in diff_ids if not self.has_layer(d)]
        if missing:
            raise ImageError(f"image config refers to layers that were not unpacked: {', '.join(missing)}")
        image_id = self.write_blob(config_bytes)
        with self.locked():
            path = self._image_path(image_id)
            if not path.exists():
                rec = {"id": image_id, "layers": diff_ids, "parent": parent, "last_tag_time": ""}
                atomic_write(path, json.dumps(rec, indent=1).encode())
            repos = self.repositories()
            for ref in tags:
                repos["tags"][str(ref.with_tag(ref.tag or "latest"))] = image_id
            for ref in digests:
                repos["digests"][str(ref)] = image_id
            self._write_repositories(repos)
            if tags:
                self._touch_tag_time(image_id)
        return image_id

    def _touch_tag_time(self, image_id: str) -> None:
        rec = self.record(image_id)
        rec["last_tag_time"] = views.rfc3339(time.time())
        atomic_write(self._image_path(image_id), json.dumps(rec, indent=1).encode())

    # ---- lookups ------------------------------------------------------------------------------------
    def resolve(self, ref: str) -> str:
        """Image ID for a reference, full ID or unique ID prefix, in Docker's order; else ImageNotFound."""
        if is_image_id(ref):
            image_id = ref if ref.startswith("sha256:") else "sha256:" + ref
            if self._image_path(image_id).exists():
                return image_id
            raise ImageNotFound(f"No such image: {ref}")
        parsed: Reference | None
        try:
            parsed = parse(ref)
        except InvalidReference:
            parsed = None
        if parsed is not None:
            repos = self.repositories()
            if parsed.digest:  # name:tag@digest: the digest wins, as in Docker
                table, key = repos["digests"], str(parsed.with_digest(parsed.digest))
            else:
                table, key = repos["tags"], str(parsed)
            if key in table and self._image_path(table[key]).exists():
                return table[key]
        if is_id_prefix(ref):
            hexpart = ref.removeprefix("sha256:")
            matches = [i for i in self.image_ids() if i[7:].startswith(hexpart)]
            if len(matches) == 1:
                return matches[0]
        shown = parsed.familiar if parsed is not None else ref
        raise ImageNotFound(f"No such image: {shown}")

    def exists(self, ref: str) -> bool:
        try:
            self.resolve(ref)
            return True
        except ImageError:
            return False

    def config(self, ref: str) -> dict[str, Any]:
        return json.loads(self.read_blob(self.resolve(ref)))

    def layer_dirs(self, ref: str, short: bool = False) -> list[Path]:
        """Unpacked layer folders, lowest first: overlayfs lowerdir is these reversed, joined with ':'.

        short=True gives `<root>/l/<20 hex>` symlinks to the same folders (overlay resolves them at mount),
        so that about twice as many layers fit in the one page of overlay mount options.

        A layer that repeats (two identical COPYs) is listed once, at its topmost place: overlayfs refuses the
        same folder twice (ELOOP), and the upper copy already shadows everything the lower one shows."""
        layers = self.record(self.resolve(ref))["layers"]
        top_first = list(dict.fromkeys(reversed(layers)))
        stack = list(reversed(top_first))
        if short:
            return [self.short_dir(d) for d in stack]
        return [self.layer_root(d) / "diff" for d in stack]

    def short_dir(self, diff_id: str) -> Path:
        hexd = _hex(diff_id)
        target = f"../layers/{hexd}/diff"
        (self.root / "l").mkdir(exist_ok=True)
        for name in (hexd[:20], hexd):  # the full name only if a prefix ever collided
            link = self.root / "l" / name
            with contextlib.suppress(FileExistsError):
                os.symlink(target, link)
            if os.readlink(link) == target:
                return link
        raise ImageError(f"cannot make a short link for layer {diff_id}")

    def refs_of(self, image_id: str) -> tuple[list[Reference], list[Reference]]:
        repos = self.repositories()
        tags = [parse(k) for k, v in sorted(repos["tags"].items()) if v == image_id]
        digests = [parse(k) for k, v in sorted(repos["digests"].items()) if v == image_id]
        return tags, digests

    def inspect(self, ref: str) -> dict[str, Any]:
        return views.inspect(self, self.resolve(ref))

    def history(self, ref: str) -> list[dict[str, Any]]:
        return views.history(self, self.resolve(ref))

    def list(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return views.image_list(self, filters or {})

    # ---- changes ------------------------------------------------------------------------------------
    def tag(self, src: str, dst: str | Reference) -> None:
        image_id = self.resolve(src)
        ref = dst if isinstance(dst, Reference) else parse(dst)
        if ref.digest:
            raise InvalidReference("refusing to create a tag with a digest reference")
        with self.locked():
            repos = self.repositories()
            repos["tags"][str(ref)] = image_id
            self._write_repositories(repos)
            self._touch_tag_time(image_id)

    def remove(self, ref: str, force: bool = False, in_use: InUse | None = None) -> list[dict[str, str]]:
        """`docker rmi`: untag a name, or delete the image once no name is left and no container uses it.

        Refused (ImageConflict) while a container uses the image unless `force`; with force the names go but
        the image's files stay as long as a container uses them (Docker would delete them from under it)."""
        from . import removal

        return removal.remove(self, ref, force, in_use)

    def prune(self, dangling_only: bool = True, in_use: InUse | None = None) -> dict[str, Any]:
        from . import removal

        return removal.prune(self, dangling_only, in_use)

    def delete_image(self, image_id: str) -> int:
        """Drop the record, its config blob, and every layer no remaining image uses; bytes freed."""
        from . import removal

        return removal.delete_image(self, image_id)

    @contextlib.contextmanager
    def importing(self) -> Iterator[None]:
        """Marks a pull/load/commit in progress: its layers are unpacked before any image refers to them,
        so the orphan-layer sweep of `prune` must wait until none is running."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    @property
    def importing_now(self) -> bool:
        return self._active > 0

    def pull(self, ref: str, auth: dict[str, Any] | None = None, progress: Progress | None = None) -> str:
        from . import registry

        with self.importing():
            return registry.pull(self, parse(ref), auth, progress or _noprogress)

    def push(self, ref: str, auth: dict[str, Any] | None = None, progress: Progress | None = None) -> str:
        from . import registry

        with self.importing():  # it may add a gzip blob to a layer: not to be swept meanwhile
            return registry.push(self, parse(ref), auth, progress or _noprogress)

    def login(self, auth: dict[str, Any]) -> dict[str, str]:
        """`POST /auth`: check `auth` ("serveraddress", credentials) with that registry; 401 if wrong."""
        from . import registry

        return registry.login(self, auth)

    def load(self, fileobj: BinaryIO, progress: Progress | None = None) -> list[str]:
        from . import archive

        with self.importing():
            return archive.load(self, fileobj, progress or _noprogress)

    def save(self, refs: list[str], fileobj: BinaryIO) -> None:
        from . import archive

        archive.save(self, refs, fileobj)

    def commit(
        self,
        upper_dir: Path | None,
        parent: str | None,
        changes: dict[str, Any] | None = None,
        *,
        comment: str = "",
        author: str = "",
        created_by: str = "",
        tag: str | None = None,
    ) -> str:
        """A new image: `parent`'s config and layers + the diff in `upper_dir` (a container's overlay upper,
        whiteouts included) as one layer. `changes` overrides keys of the config's "config" (Cmd, Env, …);
        its lowercase keys "config" (a container's Config) and "changes" (`--change` lines) are special.
        upper_dir=None adds no layer (an `empty_layer` history entry), as the builder needs for ENV/CMD."""
        from . import commit

        with self.importing():
            return commit.commit(
                self,
                upper_dir,
                parent,
                changes or {},
                comment=comment,
                author=author,
                created_by=created_by,
                tag=tag,
            )
