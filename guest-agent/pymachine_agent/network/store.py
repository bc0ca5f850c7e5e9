"""Records on disk: one JSON file per object, written atomically (write, fsync, rename)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Records:
    """A folder of `<key>.json` records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"bad record key {key!r}")
        return self.folder / f"{key}.json"

    def write(self, key: str, data: dict[str, Any]) -> None:
        target = self.path(key)
        tmp = target.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for file in sorted(self.folder.glob("*.json")):
            try:
                out[file.stem] = json.loads(file.read_text())
            except (OSError, ValueError):
                continue  # a torn file cannot exist (atomic rename), but never let one stop the agent
        return out
