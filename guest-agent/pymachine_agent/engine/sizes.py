"""What `docker ps -s`, `inspect --size` and `system df` report of a container: its writable layer's bytes
and those plus its image's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import dockerview as view
from ..images import ImageStore


def dir_size(path: str | Path) -> int:
    """Bytes of regular files under `path` (hard links counted once), what `docker ps -s` reports."""
    total, seen = 0, set()
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def container_sizes(images: ImageStore, st: Any) -> dict[str, int]:
    rw = dir_size(st.upper_dir) if st.upper_dir else 0
    try:
        image = int(images.inspect(view.docker_of(st).get("Image", "")).get("Size") or 0)
    except Exception:
        image = 0
    return {"SizeRw": rw, "SizeRootFs": rw + image}
