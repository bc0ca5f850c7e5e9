"""Build cache: a step's key is its parent image + the substituted instruction + (COPY/ADD) content hashes.

An unchanged step maps to the image it produced last time, so a rebuild creates no layer; a changed file
changes the COPY key, hence that image, hence every later key (each key includes its parent). The index is a
JSON file in the engine's state folder; entries whose image was removed are simply misses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from pymachine_agent import atomic
from pymachine_agent.digest import sha256


def step_key(parent_id: str, instruction: str, extra: Mapping[str, object] | None = None) -> str:
    """The cache key of one step: sha256 over parent, substituted instruction and whatever else shapes it."""
    doc = {"parent": parent_id, "instruction": instruction, "extra": dict(extra or {})}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, sha256).hexdigest()


def hash_paths(root: Path, paths: Iterable[Path], known: Mapping[str, str] | None = None) -> str:
    """Content hash of COPY/ADD sources: names (relative to `root`), types, modes, bytes and link targets.

    Owners and mtimes are left out: the context tar from the client carries uid 0 and fresh mtimes anyway, and
    what lands in the image (owner from --chown, content, mode) is what the key must track. `known` maps
    paths relative to `root` to the sha256 already computed while unpacking (no second read).
    """
    known = known or {}
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
            digest = known.get(rel) or _file_digest(path)
            h.update(f"F {rel} {mode:o} {digest}\n".encode())
        else:
            h.update(f"O {rel} {mode:o}\n".encode())

    for path in paths:
        add(str(path))
    return h.hexdigest()


class BuildCache:
    """key → image id, persisted atomically (write, fsync, rename). Concurrent builds (threads or processes)
    merge their entries under a file lock instead of overwriting each other's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries = self._read()

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, image_id: str) -> None:
        self._update(lambda entries: entries.__setitem__(key, image_id))

    def forget_image(self, image_id: str) -> None:
        def drop(entries: dict[str, str]) -> None:
            for k in [k for k, v in entries.items() if v == image_id]:
                del entries[k]

        self._update(drop)

    def _update(self, change: Callable[[dict[str, str]], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_suffix(".lock"), "a+") as lockfile:
            fcntl.flock(lockfile, fcntl.LOCK_EX)
            entries = self._read()
            change(entries)
            atomic.write_json(self.path, entries)
            self._entries = entries
