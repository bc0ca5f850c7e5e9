"""Records on disk: one JSON file per object, written atomically (pymachine_agent.atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pymachine_agent import atomic


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
        atomic.write_json(self.path(key), data, indent=1, sort_keys=True)

    def read(self, key: str) -> dict[str, Any] | None:
        """The record; None when missing or unreadable (logged by read_json_record)."""
        data = atomic.read_json_record(self.path(key))
        return data if isinstance(data, dict) else None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def all(self) -> dict[str, dict[str, Any]]:
        out = {}
        for file in sorted(self.folder.glob("*.json")):
            data = atomic.read_json_record(file)  # an unreadable record is logged and skipped
            if isinstance(data, dict):
                out[file.stem] = data
        return out
