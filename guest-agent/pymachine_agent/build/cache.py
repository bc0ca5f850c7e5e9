"""Build cache: a step's key is its parent image + the substituted instruction + (COPY/ADD) content hashes.

An unchanged step maps to the image it produced last time, so a rebuild creates no layer; a changed file
changes the COPY key, hence that image, hence every later key (each key includes its parent). The index is a
JSON file in the engine's state folder; entries whose image was removed are simply misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path


def step_key(parent_id: str, instruction: str, extra: Mapping[str, object] | None = None) -> str:
    """The cache key of one step: sha256 over parent, substituted instruction and whatever else shapes it."""
    doc = {"parent": parent_id, "instruction": instruction, "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def hash_paths(root: Path, paths: Iterable[Path]) -> str:
    """Content hash of COPY/ADD sources: names (relative to `root`), types, modes, bytes and link targets.

    Owners and mtimes are left out: the context tar from the client carries uid 0 and fresh mtimes anyway, and
    what lands in the image (owner from --chown, content, mode) is what the key must track.
    """
    h = hashlib.sha256()

    def add(path: str) -> None:
        st = os.lstat(path)
        rel = os.path.relpath(path, root)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            h.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif stat.S_ISDIR(st.st_mode):
            h.update(f"D {rel} {mode:o}\n".encode())
            for name in sorted(os.listdir(path)):
                add(os.path.join(path, name))
        elif stat.S_ISREG(st.st_mode):
            h.update(f"F {rel} {mode:o} {_file_digest(path)}\n".encode())
        else:
            h.update(f"O {rel} {mode:o}\n".encode())

    for path in paths:
        add(str(path))
    return h.hexdigest()


class BuildCache:
    """key → image id, persisted atomically (write, fsync, rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        try:
            self._entries = dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            self._entries = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, image_id: str) -> None:
        with self._lock:
            self._entries[key] = image_id
            self._save()

    def forget_image(self, image_id: str) -> None:
        with self._lock:
            stale = [k for k, v in self._entries.items() if v == image_id]
            for key in stale:
                del self._entries[key]
            if stale:
                self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(self._entries, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
