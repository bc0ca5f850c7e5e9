"""Write reproducible single-layer `docker save` archives (what `docker load` accepts).

Layout: `manifest.json`, `repositories`, `<config sha256>.json` (with `rootfs.diff_ids`), and
`<layer id>/{VERSION,json,layer.tar}`. Every entry has a fixed mtime, uid/gid 0 and no user names, and entries
are written in a fixed order, so the same input always gives the same bytes and the same image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import BinaryIO

# 2024-01-01T00:00:00Z: a fixed timestamp for every file and for the image's `created`.
FIXED_MTIME = 1704067200
CREATED = "2024-01-01T00:00:00Z"


def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = FIXED_MTIME
    info.uname = info.gname = ""
    info.pax_headers = {}
    return info


class LayerWriter:
    """Append entries to a layer tar; the caller adds them in a stable order (e.g. sorted by path)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed in close())

    def add(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        self._tar.addfile(normalize(info), data)

    def directory(self, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        self.add(info)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        self.add(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self.add(info)

    def close(self) -> str:
        """Finish the tar; returns its sha256 (the layer's diff_id without the `sha256:` prefix)."""
        self._tar.close()
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def image_config(diff_id: str, config: dict[str, object], comment: str) -> bytes:
    document = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": CREATED, "created_by": comment}],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_docker_archive(out: Path, repo_tags: list[str], layer: Path, diff_id: str, config: bytes) -> str:
    """Write the archive to `out`; returns the image id (`sha256:` + sha256 of the config)."""
    config_id = hashlib.sha256(config).hexdigest()
    # The legacy v1 layer id: derived from the content so it is stable too.
    layer_id = hashlib.sha256(f"{diff_id}\0{config_id}".encode()).hexdigest()
    manifest = [{"Config": f"{config_id}.json", "RepoTags": repo_tags, "Layers": [f"{layer_id}/layer.tar"]}]
    repositories: dict[str, dict[str, str]] = {}
    for ref in repo_tags:
        repo, tag = ref.rsplit(":", 1)
        repositories.setdefault(repo, {})[tag] = layer_id
    legacy = {"id": layer_id, "created": CREATED, "os": "linux", "architecture": "amd64"}

    def blob(name: str, data: bytes) -> tuple[tarfile.TarInfo, BinaryIO]:
        info = normalize(tarfile.TarInfo(name))
        info.size, info.mode = len(data), 0o644
        return info, io.BytesIO(data)

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        folder = normalize(tarfile.TarInfo(layer_id))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        tar.addfile(*blob(f"{layer_id}/VERSION", b"1.0"))
        tar.addfile(*blob(f"{layer_id}/json", json.dumps(legacy, sort_keys=True).encode()))
        info = normalize(tarfile.TarInfo(f"{layer_id}/layer.tar"))
        info.size, info.mode = layer.stat().st_size, 0o644
        with open(layer, "rb") as fh:
            tar.addfile(info, fh)
        tar.addfile(*blob(f"{config_id}.json", config))
        tar.addfile(*blob("manifest.json", json.dumps(manifest, sort_keys=True).encode()))
        tar.addfile(*blob("repositories", json.dumps(repositories, sort_keys=True).encode()))
    return f"sha256:{config_id}"
