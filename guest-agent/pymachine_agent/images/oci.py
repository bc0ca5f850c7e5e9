"""Media types and the small pure pieces of the OCI image spec shared by archives and the registry client."""

from __future__ import annotations

import json
import re
from typing import Any, BinaryIO

from ..digest import sha256
from ..errors import DigestMismatch, ImageError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    OCI_LAYER_TAR,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_FOREIGN_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

WANT_OS, WANT_ARCH = "linux", "amd64"
_CHUNK = 1 << 20


def media_type_of(doc: dict[str, Any], fallback: str = "") -> str:
    """A manifest's own mediaType; old OCI documents omit it, so tell index from manifest by shape."""
    if doc.get("mediaType"):
        return str(doc["mediaType"])
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    return fallback


def choose_platform(index: dict[str, Any], what: str) -> dict[str, Any]:
    """The linux/amd64 descriptor of an index or manifest list (attestation entries are unknown/unknown)."""
    for desc in index.get("manifests", []):
        plat = desc.get("platform") or {}
        if plat.get("os") == WANT_OS and plat.get("architecture") == WANT_ARCH:
            return desc
    found = sorted(
        {
            f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
            for d in index.get("manifests", [])
        }
    )
    raise ImageError(
        f"no matching manifest for {WANT_OS}/{WANT_ARCH} in the manifest list entries of {what} "
        f"(it has: {', '.join(found) or 'none'})"
    )


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_descriptors(manifest: dict[str, Any]) -> None:
    """Every digest a manifest or index names must be a well-formed sha256 before it goes into a URL or
    a path (a registry or archive is not trusted to send sane ones)."""
    descs = [manifest.get("config") or {}, *manifest.get("layers", []), *manifest.get("manifests", [])]
    for desc in descs:
        if desc and not _DIGEST.fullmatch(str(desc.get("digest", ""))):
            raise ImageError(
                f"malformed or unsupported digest {str(desc.get('digest'))[:80]!r} in a manifest"
            )


def layer_media_types(manifest: dict[str, Any]) -> list[str]:
    types = []
    for layer in manifest.get("layers", []):
        mt = layer.get("mediaType", "")
        if mt and mt not in LAYER_TYPES:
            raise ImageError(f"unsupported layer media type {mt!r}")
        types.append(mt)
    return types


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def copy_verified(
    src: BinaryIO,
    dst: BinaryIO,
    expected: str | None,
    what: str,
    on_chunk: Any = None,
    size: int | None = None,
) -> str:
    """Copy src to dst, hashing; raise DigestMismatch unless the sha256 equals `expected` (when given).
    With `size` (the descriptor's), a source sending more than that is cut off instead of filling the disk."""
    sha = sha256()  # bulk: the faster implementation here (digest.py)
    count = 0
    while chunk := src.read(_CHUNK):
        count += len(chunk)
        if size is not None and count > size:
            raise ImageError(f"{what} is larger than the {size} bytes its descriptor announced")
        sha.update(chunk)
        dst.write(chunk)
        if on_chunk:
            on_chunk(len(chunk))
    if size is not None and count < size:
        raise ImageError(f"{what} ended after {count} of its {size} bytes: the transfer was cut short")
    digest = "sha256:" + sha.hexdigest()
    if expected and digest != expected:
        raise DigestMismatch(what, expected, digest)
    return digest
