"""Named volumes: one folder per volume under `<state>/volumes/<name>/_data`, metadata beside it."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import atomic
from .errors import VolumeBadName, VolumeError, VolumeInUse, VolumeNotFound

log = logging.getLogger("pymachine_agent.volumes")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

__all__ = ["VolumeBadName", "VolumeError", "VolumeInUse", "VolumeNotFound", "VolumeStore"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class VolumeStore:
    """Local-driver volumes. `in_use(name) -> [container ids]` is supplied by the engine."""

    def __init__(self, root: Path, in_use: Callable[[str], list[str]] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.in_use = in_use or (lambda name: [])
        self.lock = threading.RLock()  # create() reads (and may repair) under it

    def _meta_path(self, name: str) -> Path:
        return self.root / name / "volume.json"

    def path(self, name: str) -> str:
        """The folder mounted into containers (created with the volume)."""
        return str(self.root / name / "_data")

    def _read(self, name: str) -> dict[str, Any]:
        meta = atomic.read_json_record(self._meta_path(name))
        if isinstance(meta, dict) and isinstance(meta.get("Name"), str):
            return meta
        if not self._meta_path(name).exists():
            raise VolumeNotFound(f"get {name}: no such volume")
        return self._repair(name)

    def _repair(self, name: str) -> dict[str, Any]:
        """An unreadable volume.json (an older agent's unsynced write before a crash, a full disk) beside the
        volume's data: the data is what matters, so the volume keeps its name with fresh metadata."""
        with self.lock:
            meta = atomic.read_json_record(self._meta_path(name))
            if isinstance(meta, dict) and isinstance(meta.get("Name"), str):
                return meta
            created = time.gmtime(os.stat(self.root / name).st_mtime)
            meta = {"Name": name, "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", created), "Labels": {}}
            meta["Options"], meta["Anonymous"] = {}, False
            (self.root / name / "_data").mkdir(parents=True, exist_ok=True)
            atomic.write_json(self._meta_path(name), meta)
            log.warning("volume %s: its volume.json was unreadable; rewritten with its name only", name)
            return meta

    def _view(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "CreatedAt": meta["CreatedAt"],
            "Driver": "local",
            "Labels": meta.get("Labels") or {},
            "Mountpoint": self.path(meta["Name"]),
            "Name": meta["Name"],
            "Options": meta.get("Options") or {},
            "Scope": "local",
        }

    def create(
        self,
        name: str = "",
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """Create (or return the existing) volume; an empty name makes an anonymous 64-hex one."""
        name = name or secrets.token_hex(32)
        if not _NAME_RE.match(name):
            raise VolumeBadName(
                f'create {name}: "{name}" includes invalid characters for a local volume name, only '
                '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use '
                "absolute path"
            )
        with self.lock:
            if self._meta_path(name).exists():
                return self._view(self._read(name))
            (self.root / name / "_data").mkdir(parents=True, exist_ok=True)
            meta = {
                "Name": name,
                "CreatedAt": _now(),
                "Labels": dict(labels or {}),
                "Options": dict(options or {}),
                "Anonymous": anonymous,
            }
            if anonymous:
                meta["Labels"].setdefault("com.docker.volume.anonymous", "")
            atomic.write_json(self._meta_path(name), meta)
            return self._view(meta)

    def ensure(self, name: str) -> str:
        """Create `name` if missing; returns its folder (used for `-v name:/path`)."""
        self.create(name)
        return self.path(name)

    def inspect(self, name: str) -> dict[str, Any]:
        return self._view(self._read(name))

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "volume.json").exists())

    def list(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                meta = self._read(name)
            except VolumeNotFound:
                continue
            if self._matches(meta, filters or {}):
                out.append(self._view(meta))
        return out

    def _matches(self, meta: dict[str, Any], filters: dict[str, list[str]]) -> bool:
        for key, values in filters.items():
            if not values:
                continue
            if key == "name":
                ok = any(v in meta["Name"] for v in values)
            elif key == "label":
                labels = meta.get("Labels") or {}
                ok = all(
                    (k in labels and (not eq or labels[k] == val))
                    for k, eq, val in (v.partition("=") for v in values)
                )
            elif key == "dangling":
                want = values[0].lower() in ("1", "true")
                ok = (not self.in_use(meta["Name"])) == want
            elif key == "driver":
                ok = "local" in values
            else:
                ok = True
            if not ok:
                return False
        return True

    def remove(self, name: str, force: bool = False) -> None:
        with self.lock:
            if not self._meta_path(name).exists():
                if force:
                    return
                raise VolumeNotFound(f"get {name}: no such volume")
            users = self.in_use(name)
            if users:
                raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(users)}]")
            shutil.rmtree(self.root / name)

    def is_anonymous(self, name: str) -> bool:
        try:
            return bool(self._read(name).get("Anonymous"))
        except VolumeNotFound:
            return False

    def size(self, name: str) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.path(name)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total

    def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        """Remove unused volumes. Like Docker ≥ 23, only anonymous ones unless `all=true` is filtered."""
        filters = dict(filters or {})
        everything = (filters.pop("all", ["false"]) or ["false"])[0].lower() in ("1", "true")
        deleted, reclaimed = [], 0
        for meta in [self._read(n) for n in self.names()]:
            if not everything and not meta.get("Anonymous"):
                continue
            if self.in_use(meta["Name"]) or not self._matches(meta, filters):
                continue
            reclaimed += self.size(meta["Name"])
            self.remove(meta["Name"], force=True)
            deleted.append(meta["Name"])
        return {"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}
