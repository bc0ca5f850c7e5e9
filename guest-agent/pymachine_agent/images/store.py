"""On-disk image store. Layout under `root`:

    blobs/sha256/<hex>          content-addressed blobs: image configs, layer tars as received (gzip or plain)
    layers/<diff hex>/diff/     one unpacked layer (overlayfs lowerdir form), shared by every image using it
    layers/<diff hex>/layer.json  {"diff_id", "size", "tar_size", "blobs": {digest: media type}}
    layers/<diff hex>/tar-split.*  a loaded uncompressed layer's tar as an index into diff/ (tarsplit.py),
                                  in place of its blob file
    images/<id hex>.json        {"id", "layers": [diff_id…], "parent", "last_tag_time"}
    repositories.json           {"tags": {"docker.io/library/x:tag": id}, "digests": {"…/x@sha256:…": id}}
    tmp/                        unpacks and downloads in progress (same filesystem, so rename is atomic)

Layer reference counts are derived from the image records rather than kept as counters, so a crash between
two writes can never leave a count that drifts; a layer no image references is deleted with its blobs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .. import atomic
from ..errors import ImageError, ImageNotFound, InvalidReference
from . import durable, views
from .content import ContentStore, atomic_write, digest_hex
from .reference import Reference, is_id_prefix, is_image_id, parse

Progress = Callable[[dict[str, Any]], None]
InUse = Callable[[str], Iterable[str]]


def _noprogress(_msg: dict[str, Any]) -> None:
    pass


class ImageStore(ContentStore):
    def __init__(self, root: Path | str, insecure_registries: Iterable[str] = ()) -> None:
        super().__init__(Path(root))
        self.insecure_registries = set(insecure_registries)
        for sub in ("blobs/sha256", "layers", "images", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # tmp/ holds only work of a running process: what is there now is debris of a previous agent
        for leftover in (self.root / "tmp").iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self._active = 0
        from . import removal

        usage = removal.LayerUsage(self)  # each image record and layer.json read once for both
        removal.sweep(self, usage)  # layers and blobs a crash left without an image
        durable.check_unflushed(self, usage)  # layers an older agent wrote: whole, or removed with images

    # ---- image records and tags ---------------------------------------------------------------------
    def _image_path(self, image_id: str) -> Path:
        return self.root / "images" / (digest_hex(image_id) + ".json")

    def record(self, image_id: str) -> dict[str, Any]:
        rec = atomic.read_json_record(self._image_path(image_id))  # unreadable: logged, then as if missing
        if not isinstance(rec, dict):
            raise ImageNotFound(f"No such image: {image_id}")
        return rec

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
        self.flush_placed()  # the layers' files are on the disk before a record names them
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

    def refs_of(self, image_id: str) -> tuple[list[Reference], list[Reference]]:
        repos = self.repositories()
        tags = [parse(k) for k, v in sorted(repos["tags"].items()) if v == image_id]
        digests = [parse(k) for k, v in sorted(repos["digests"].items()) if v == image_id]
        return tags, digests

    def inspect(self, ref: str) -> dict[str, Any]:
        return views.inspect(self, self.resolve(ref))

    def history(self, ref: str) -> list[dict[str, Any]]:
        return views.history(self, self.resolve(ref))

    def list(self, filters: dict[str, Any] | None = None, all_images: bool = False) -> list[dict[str, Any]]:
        """`GET /images/json`: untagged parents of other images (build steps) only with `all_images`."""
        return views.image_list(self, filters or {}, all_images)

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

    def remove(
        self, ref: str, force: bool = False, in_use: InUse | None = None, prune: bool = True
    ) -> list[dict[str, str]]:
        """`docker rmi`: untag a name, or delete the image once no name is left and no container uses it;
        then (`prune`, dockerd's default) its unnamed parents that nothing else uses.

        Refused (ImageConflict) while a container uses the image unless `force`; with force the names go but
        the image's files stay as long as a container uses them (Docker would delete them from under it)."""
        from . import removal

        return removal.remove(self, ref, force, in_use, prune)

    def prune(self, dangling_only: bool = True, in_use: InUse | None = None) -> dict[str, Any]:
        """`docker image prune`: unused untagged images without children (and then their untagged parents,
        as Docker deletes a parent chain); `dangling_only=False` (`-a`): every unused image with no child
        left. An image some kept image builds on is never removed, so the build cache survives."""
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

    def import_rootfs(
        self,
        fileobj: BinaryIO,
        *,
        source: str,
        tag: str = "",
        message: str = "",
        changes: list[str] | None = None,
    ) -> str:
        """`docker import`: a root filesystem tar (seekable file) as a new one-layer image."""
        from . import rootfs

        with self.importing():
            return rootfs.import_rootfs(
                self, fileobj, source=source, tag=tag, message=message, changes=changes or []
            )

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
