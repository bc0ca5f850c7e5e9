"""`docker load` / `docker save`: docker-archive tarballs (manifest.json) and OCI image layouts (index.json).

`save` writes both at once, as Docker 25+ does: blobs/sha256/<hex> holds the config, the uncompressed layer
tars and an OCI manifest per image; manifest.json and index.json point into it, so `docker load`, podman,
skopeo and our own `load` all read it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ArchiveError, ImageError, InvalidReference
from . import oci, tarsplit
from .reference import Reference, is_image_id, parse, short_id
from .staging import Staged, Staging, media_type_of

_CHUNK = 1 << 20

if TYPE_CHECKING:
    from .store import ImageStore, Progress


def _blob(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def _json(arc: Staging, name: str) -> Any:
    try:
        return json.loads(arc.read(name))
    except ValueError as err:
        raise ArchiveError(f"{name} in the archive is not valid JSON: {err}") from err


@dataclass
class _Image:
    """One image the manifests describe; layers: (member, blob digest to verify or None, media type)."""

    config_bytes: bytes
    tags: list[Reference]
    layers: list[tuple[str, str | None, str | None]]


def _ref_or_none(name: str | None) -> Reference | None:
    if not name:
        return None
    try:
        ref = parse(name)
    except InvalidReference:
        return None
    return None if ref.digest and not ref.tag else ref


def _plan_docker(arc: Staging) -> list[_Image]:
    entries = _json(arc, "manifest.json")
    if not isinstance(entries, list):
        raise ArchiveError("manifest.json in the archive is not a list")
    found = []
    for entry in entries:
        tags = [r for r in (_ref_or_none(t) for t in entry.get("RepoTags") or []) if r is not None]
        layers = [(name, None, None) for name in entry.get("Layers") or []]
        found.append(_Image(arc.read(entry["Config"]), tags, layers))
    return found


def _plan_oci(arc: Staging) -> list[_Image]:
    index = _json(arc, "index.json")
    oci.check_descriptors(index)
    found = []
    for desc in index.get("manifests", []):
        annotations = desc.get("annotations") or {}
        ref = _ref_or_none(annotations.get(oci.ANNOTATION_CONTAINERD_NAME)) or _ref_or_none(
            annotations.get(oci.ANNOTATION_REF_NAME)
            if "/" in annotations.get(oci.ANNOTATION_REF_NAME, "")
            else None
        )
        manifest = _verified_json(arc, desc)
        while oci.media_type_of(manifest) in oci.INDEX_TYPES:
            desc = oci.choose_platform(manifest, "the archive's index")
            manifest = _verified_json(arc, desc)
        oci.layer_media_types(manifest)
        config_bytes = arc.verified(_blob(manifest["config"]["digest"]), manifest["config"]["digest"])
        layers = [(_blob(d["digest"]), d["digest"], d.get("mediaType")) for d in manifest.get("layers", [])]
        found.append(_Image(config_bytes, [ref] if ref else [], layers))
    return found


def _verified_json(arc: Staging, desc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(arc.verified(_blob(desc["digest"]), desc["digest"]))
    oci.check_descriptors(doc)
    return doc


def _commit(store: ImageStore, arc: Staging, images: list[_Image], progress: Progress) -> list[str]:
    """Check every layer of every image first (digests, unpacking), then commit: a load that fails on its
    last layer has put nothing into the store."""
    ready: dict[str, tuple[Staged, str | None]] = {}  # diff_id → its staged layer, the media type given
    for image in images:
        config = json.loads(image.config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(image.layers):
            raise ArchiveError(
                f"the image config lists {len(diff_ids)} layers but the archive has {len(image.layers)}"
            )
        for (name, digest, media_type), diff_id in zip(image.layers, diff_ids, strict=True):
            if diff_id not in ready and not store.layer_has_blob(diff_id):
                ready[diff_id] = (arc.layer(name, digest, diff_id), media_type)
    for diff_id, (staged, media_type) in ready.items():
        progress({"status": "Loading layer", "id": short_id(diff_id), "progressDetail": {}})
        assert staged.layer is not None and staged.result is not None
        store.install_layer(
            staged.layer, staged.result, staged.path, staged.digest, media_type or media_type_of(staged.head)
        )
        staged.layer = staged.path = None  # moved into the store
    loaded: list[str] = []
    for image in images:
        image_id = store.add_image(image.config_bytes, image.tags)
        loaded += [t.familiar for t in image.tags] or [image_id]
    return loaded


def load(store: ImageStore, fileobj: BinaryIO, progress: Progress) -> list[str]:
    """Load every image of a docker-archive or OCI-layout tar; returns familiar tags (or IDs if untagged).

    The archive is read once, as a stream (a request body needs no copy on disk first): images/staging.py
    unpacks its layers as they arrive; the store gets them only once the whole archive checked out."""
    work = store.tmp_dir()
    try:
        arc = Staging(work)
        arc.read_stream(fileobj)
        if "manifest.json" in arc.members:
            images = _plan_docker(arc)
        elif "index.json" in arc.members:
            images = _plan_oci(arc)
        else:
            raise ArchiveError("not an image archive: it has neither manifest.json nor index.json")
        loaded = _commit(store, arc, images, progress)
        for name in loaded:
            progress({"stream": f"Loaded image{' ID' if name.startswith('sha256:') else ''}: {name}\n"})
        return loaded
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- save ------------------------------------------------------------------------------------------


class _TarOut:
    """The members `save` writes (folders and files), framed as tarfile frames them (TarInfo.tobuf, the same
    end blocks and record padding), written to `out` as they come: no spool file. A layer kept as an
    uncompressed blob goes by `out.sendfile(fd, size)` when `out` has one (the API's response: from the page
    cache to the socket in the kernel, not through Python: under TCG each copy costs)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.offset = 0

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.offset += len(data)

    def _member(self, name: str, size: int, directory: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        if directory:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _sendfile(self, sendfile: Any, fd: int, count: int) -> None:
        sendfile(fd, count)
        self.offset += count

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_dir(self, name: str) -> None:
        self._member(name, 0, directory=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        self._member(name, len(data))
        self._write(data)
        self._pad(len(data))

    def add_stream(self, name: str, stream: BinaryIO, size: int) -> None:
        self._member(name, size)
        sendfile = getattr(self.out, "sendfile", None)
        if sendfile is not None and isinstance(stream, tarsplit.SplitTar):
            if stream.size != size:
                raise ImageError(f"{name}: the layer's tar index is not the {size} bytes its layer records")
            stream.send(self._write, lambda fd, count: self._sendfile(sendfile, fd, count))
        elif sendfile is not None and type(stream) is io.BufferedReader:  # a plain file, not a gzip reader
            fd = stream.fileno()
            if os.fstat(fd).st_size != size:
                raise ImageError(f"{name}: the stored blob is not the {size} bytes its layer records")
            sendfile(fd, size)
            self.offset += size
        else:
            left = size
            while left > 0 and (chunk := stream.read(min(_CHUNK, left))):
                self._write(chunk)
                left -= len(chunk)
            if left:
                raise ImageError(f"{name}: the stored layer ended {left} bytes short of its {size}")
        self._pad(size)

    def close(self) -> None:
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        if self.offset % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))


def layer_tar_stream(store: ImageStore, diff_id: str) -> tuple[BinaryIO, int]:
    """The uncompressed layer tar (sha256 = `diff_id`) from whichever blob of it is kept (or rebuilt from its
    tar-split index, tarsplit.py), and its size."""
    meta = store.layer_meta(diff_id)
    if tarsplit.exists(store.layer_root(diff_id)):
        return tarsplit.SplitTar(store.layer_root(diff_id)), meta["tar_size"]  # type: ignore[return-value]
    for digest, media_type in meta["blobs"].items():
        path = store.blob_path(digest)
        if not path.exists():
            continue
        if digest == diff_id:
            return open(path, "rb"), meta["tar_size"]
        if media_type.endswith("gzip"):
            return gzip.open(path, "rb"), meta["tar_size"]  # type: ignore[return-value]
    raise ImageError(f"layer {diff_id} has no stored blob to export (it was unpacked without keeping one)")


def save(store: ImageStore, refs: list[str], fileobj: BinaryIO) -> None:
    images: dict[str, list[Reference]] = {}
    for ref in refs:
        image_id = store.resolve(ref)
        tags = images.setdefault(image_id, [])
        if not is_image_id(ref) and not ref.startswith("sha256:"):
            try:
                parsed = parse(ref)
            except InvalidReference:
                parsed = None
            if parsed is not None and parsed.tag and str(parsed) in store.repositories()["tags"]:
                tags.append(parsed)
    manifest_json: list[dict[str, Any]] = []
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": []}
    written: set[str] = set()
    for image_id in images:  # every layer exportable before the first byte: a failure is still a status
        for diff_id in store.record(image_id)["layers"]:
            stream = layer_tar_stream(store, diff_id)[0]
            with stream:
                if isinstance(stream, tarsplit.SplitTar):
                    stream.check()
    tar = _TarOut(fileobj)
    tar.add_dir("blobs")
    tar.add_dir("blobs/sha256")
    for image_id, tags in images.items():
        config_bytes = store.read_blob(image_id)
        rec = store.record(image_id)
        layer_descs = []
        for diff_id in rec["layers"]:
            size = store.layer_meta(diff_id)["tar_size"]
            layer_descs.append({"mediaType": oci.OCI_LAYER_TAR, "digest": diff_id, "size": size})
            if diff_id in written:
                continue
            stream, size = layer_tar_stream(store, diff_id)
            with stream:
                tar.add_stream(f"blobs/sha256/{diff_id[7:]}", stream, size)
            written.add(diff_id)
        if image_id not in written:
            tar.add_bytes(f"blobs/sha256/{image_id[7:]}", config_bytes)
            written.add(image_id)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": image_id, "size": len(config_bytes)},
            "layers": layer_descs,
        }
        manifest_bytes = oci.canonical_json(manifest)
        manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        if manifest_digest not in written:
            tar.add_bytes(f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
            written.add(manifest_digest)
        desc = {"mediaType": oci.OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes)}
        for tag in tags or [None]:
            entry = dict(desc)
            if tag is not None:
                entry["annotations"] = {
                    oci.ANNOTATION_CONTAINERD_NAME: str(tag),
                    oci.ANNOTATION_REF_NAME: tag.tag,
                }
            index["manifests"].append(entry)
        manifest_json.append(
            {
                "Config": f"blobs/sha256/{image_id[7:]}",
                "RepoTags": [t.familiar for t in tags] or None,
                "Layers": [f"blobs/sha256/{d[7:]}" for d in rec["layers"]],
            }
        )
    tar.add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    tar.add_bytes("index.json", json.dumps(index).encode())
    tar.add_bytes("manifest.json", json.dumps(manifest_json).encode())
    tar.close()
