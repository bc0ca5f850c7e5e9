"""A docker-archive whose one layer holds random bytes: content no image store has yet, so loading it needs
room (the disk-full fault tests)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path


def random_image_archive(path: Path, size: int, tag: str = "big:1") -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("blob")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    data = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    rootfs = {"type": "layers", "diff_ids": [diff_id]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": rootfs}).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": ["l/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, body in ((cfg_name, config), ("l/layer.tar", data), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
