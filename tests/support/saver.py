"""Measurements for the resource saver's tests and bench (tests/vm/test_saver_vm.py, bench/saver.py): QEMU's
CPU time and RSS from /proc, a qcow2's allocated bytes, and a 100 MiB image to load and delete."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

MiB = 1024 * 1024


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_bytes(pid: int) -> int:
    line = next(li for li in Path(f"/proc/{pid}/status").read_text().splitlines() if li.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def big_image_tar(path: Path, size: int = 100 * MiB) -> Path:
    """A docker-archive of one layer holding `size` random bytes (incompressible), tagged saver/big:1."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    blob = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps(
        [{"Config": cfg_name, "RepoTags": ["saver/big:1"], "Layers": [layer_name]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((cfg_name, config), (layer_name, blob), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
