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
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ArchiveError, ImageError, InvalidReference
from . import oci
from .oci import copy_verified
from .reference import Reference, is_image_id, parse

if TYPE_CHECKING:
    from .store import ImageStore, Progress


class _Archive:
    """Random access to the members of a spooled archive, by normalised name."""

    def __init__(self, source: Path | BinaryIO) -> None:
        if isinstance(source, Path):
            self.tar = tarfile.open(source, "r:*")  # noqa: SIM115 (closed by load's `with arc.tar`)
        else:
            self.tar = tarfile.open(fileobj=source, mode="r:*")  # noqa: SIM115
        self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isreg()}

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(name.removeprefix("./"))
        if member is None:
            raise ArchiveError(f"the archive has no member {name!r}")
        f = self.tar.extractfile(member)
        assert f is not None
        return f  # type: ignore[return-value]

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as err:
            raise ArchiveError(f"{name} in the archive is not valid JSON: {err}") from err

    def blob(self, digest: str) -> str:
        algo, _, hexpart = digest.partition(":")
        return f"blobs/{algo}/{hexpart}"


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _load_layers(
    store: ImageStore,
    arc: _Archive,
    config: dict[str, Any],
    layers: list[tuple[str, str | None, str | None]],
    progress: Progress,
) -> None:
    """layers: (member name, blob digest to verify or None, media type or None), lowest first."""
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(layers):
        raise ArchiveError(f"the image config lists {len(diff_ids)} layers but the archive has {len(layers)}")
    for (name, digest, media_type), diff_id in zip(layers, diff_ids, strict=True):
        if store.layer_has_blob(diff_id):
            continue
        progress({"status": "Loading layer", "id": _short(diff_id), "progressDetail": {}})
        with arc.open(name) as src:
            store.import_layer(src, diff_id, digest, media_type)


def _ref_or_none(name: str | None) -> Reference | None:
    if not name:
        return None
    try:
        ref = parse(name)
    except InvalidReference:
        return None
    return None if ref.digest and not ref.tag else ref


def _load_docker(store: ImageStore, arc: _Archive, progress: Progress) -> list[str]:
    loaded: list[str] = []
    entries = arc.json("manifest.json")
    if not isinstance(entries, list):
        raise ArchiveError("manifest.json in the archive is not a list")
    for entry in entries:
        config_bytes = arc.read(entry["Config"])
        config = json.loads(config_bytes)
        _load_layers(store, arc, config, [(name, None, None) for name in entry.get("Layers") or []], progress)
        tags = [r for r in (_ref_or_none(t) for t in entry.get("RepoTags") or []) if r is not None]
        image_id = store.add_image(config_bytes, tags)
        loaded += [t.familiar for t in tags] or [image_id]
    return loaded


def _load_oci(store: ImageStore, arc: _Archive, progress: Progress) -> list[str]:
    loaded: list[str] = []
    index = arc.json("index.json")
    oci.check_descriptors(index)
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
        config_bytes = _verified_bytes(arc, manifest["config"])
        config = json.loads(config_bytes)
        layers = [
            (arc.blob(d["digest"]), d["digest"], d.get("mediaType")) for d in manifest.get("layers", [])
        ]
        _load_layers(store, arc, config, layers, progress)
        image_id = store.add_image(config_bytes, [ref] if ref else [])
        loaded.append(ref.familiar if ref else image_id)
    return loaded


def _verified_bytes(arc: _Archive, desc: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    with arc.open(arc.blob(desc["digest"])) as src:
        copy_verified(src, out, desc["digest"], f"blob {desc['digest']} in the archive")
    return out.getvalue()


def _verified_json(arc: _Archive, desc: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(_verified_bytes(arc, desc))
    oci.check_descriptors(doc)
    return doc


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable()) and f.tell() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def load(store: ImageStore, fileobj: BinaryIO, progress: Progress) -> list[str]:
    """Load every image of a docker-archive or OCI-layout tar; returns familiar tags (or IDs if untagged)."""
    work = store.tmp_dir()
    try:
        source: Path | BinaryIO = fileobj
        if not _seekable(fileobj):  # a request body or pipe: random access needs a copy on disk
            source = work / "archive.tar"
            with open(source, "wb") as out:
                shutil.copyfileobj(fileobj, out, 1 << 20)
        try:
            arc = _Archive(source)
        except tarfile.TarError as err:
            raise ArchiveError(f"the uploaded file is not a tar archive: {err}") from err
        with arc.tar:
            if "manifest.json" in arc.members:
                loaded = _load_docker(store, arc, progress)
            elif "index.json" in arc.members:
                loaded = _load_oci(store, arc, progress)
            else:
                raise ArchiveError("not an image archive: it has neither manifest.json nor index.json")
        for name in loaded:
            progress({"stream": f"Loaded image{' ID' if name.startswith('sha256:') else ''}: {name}\n"})
        return loaded
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- save ------------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def layer_tar_stream(store: ImageStore, diff_id: str) -> tuple[BinaryIO, int]:
    """The uncompressed layer tar (sha256 = `diff_id`) from whichever blob of it is kept, and its size."""
    meta = store.layer_meta(diff_id)
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
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
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
                    info = tarfile.TarInfo(f"blobs/sha256/{diff_id[7:]}")
                    info.size = size
                    info.mode = 0o644
                    tar.addfile(info, stream)
                written.add(diff_id)
            if image_id not in written:
                _add_bytes(tar, f"blobs/sha256/{image_id[7:]}", config_bytes)
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
                _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
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
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        _add_bytes(tar, "manifest.json", json.dumps(manifest_json).encode())
