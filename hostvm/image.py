"""The guest VM image: recipe hash, cache lookup and the manifest other parts boot from (contracts §1).

The image lives in `paths.image_cache_dir()/<recipe_hash>/` (vmlinuz, initrd.img, disk.qcow2, manifest.json).
The hash covers every file of `images/guest/` plus the guest agent's sources, so an unchanged recipe rebuilds
nothing; `image_build` does the building in two cached stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pymachine.images import GUEST_RECIPE, VARIANTS
from pymachine_agent import protocol

from . import locks, paths
from .errors import PymachineError

# Bump when the build code changes what it produces from the same recipe.
BUILD_FORMAT = "1"
# The modules whose code decides what lands in the disk and initrd (stage 2 of the build).
BUILDER_MODULES = ("image_build.py", "image_initrd.py")
MANIFEST = "manifest.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageManifest:
    kernel: Path
    initrd: Path
    disk: Path
    recipe_hash: str
    disk_bytes: int
    virtual_bytes: int
    cmdline: str
    agent_checksum: str
    kernel_version: str = ""
    rootfs_hash: str = ""
    built_at: str = ""
    build_seconds: float = 0.0

    @property
    def folder(self) -> Path:
        return self.disk.parent

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("kernel", "initrd", "disk"):
            data[key] = str(data[key])
        return data

    @classmethod
    def load(cls, folder: Path) -> ImageManifest:
        """Read `folder/manifest.json`; file paths are resolved against the folder, so a cache can move."""
        data = json.loads((folder / MANIFEST).read_text())
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("kernel", "initrd", "disk"):
            values[key] = folder / Path(values[key]).name
        return cls(**values)

    def save(self) -> None:
        data = self.to_json()
        for key in ("kernel", "initrd", "disk"):
            data[key] = Path(str(data[key])).name
        (self.folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _tree_digest(root: Path) -> str:
    """sha256 over relative path, executable bit and content of every file under `root`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = path.relative_to(root).as_posix()
        executable = b"x" if path.stat().st_mode & 0o111 else b"-"
        digest.update(rel.encode() + b"\0" + executable + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def rootfs_hash(recipe: Path = GUEST_RECIPE, variant: Path | None = None) -> str:
    """Key of stage 1 (the mmdebstrap tarball): only `images/guest/base/` feeds it (and a variant's extra
    packages, images/cluster/packages.txt)."""
    key = f"rootfs\0{BUILD_FORMAT}\0{_tree_digest(recipe / 'base')}"
    if variant is not None:
        key += "\0" + hashlib.sha256((variant / "packages.txt").read_bytes()).hexdigest()
    return hashlib.sha256(key.encode()).hexdigest()


def agent_checksum(agent_root: Path | None = None) -> str:
    return protocol.source_checksum(agent_root) if agent_root else protocol.source_checksum()


def recipe_hash(
    recipe: Path = GUEST_RECIPE, agent_root: Path | None = None, variant: Path | None = None
) -> str:
    """Key of the finished image: the recipe folder, the guest agent's sources and the code that assembles the
    disk and initrd (its kernel command line and build steps shape the image as much as the recipe does)."""
    parts = [
        "image",
        BUILD_FORMAT,
        rootfs_hash(recipe, variant),
        _tree_digest(recipe),
        agent_checksum(agent_root),
        _builder_digest(),
        *([variant.name, _tree_digest(variant)] if variant is not None else []),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _builder_digest() -> str:
    digest = hashlib.sha256()
    for module in BUILDER_MODULES:
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()


def image_dir(hash_: str | None = None) -> Path:
    return paths.image_cache_dir() / (hash_ or recipe_hash())


def inspect_image(variant: Path | None = None) -> ImageManifest | None:
    """The manifest of the image for the current recipe, or None if it has not been built."""
    folder = image_dir(recipe_hash(variant=variant))
    if not (folder / MANIFEST).exists():
        return None
    return ImageManifest.load(folder)


def least_disk_bytes(variant: Path | None = None) -> int:
    """The smallest disk a machine of the current image can have, known before any build (`create` checks
    `--disk` before it builds): the built image's virtual size, else the size every build has at least (a
    root filesystem that needs more is caught once it is built)."""
    found = inspect_image(variant)
    if found:
        return found.virtual_bytes
    from .image_build import MIN_VIRTUAL_BYTES

    return MIN_VIRTUAL_BYTES


@contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time per cache (tests, engineers and `pymachine create` may race)."""
    cache = paths.image_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise PymachineError(
            f"cannot write to the image cache {cache}: {exc.strerror or exc}",
            hint="set PYMACHINE_HOME (or PYMACHINE_CACHE) to a writable folder",
        ) from exc
    try:
        locks.lock(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def ensure_image(
    progress: Progress | None = None, force: bool = False, variant: Path | None = None
) -> ImageManifest:
    """Return the image for the current recipe, building it (and its rootfs stage) if missing. `variant`
    (e.g. images/cluster/) adds its packages and overlay on top, under its own recipe hash."""
    from . import image_build

    say = progress or (lambda message: None)
    if not force:
        found = inspect_image(variant)
        if found:
            return found
    with build_lock():
        if not force:
            found = inspect_image(variant)  # another process may have built it while we waited
            if found:
                return found
        else:
            _refuse_if_used(image_dir(recipe_hash(variant=variant)))
        return image_build.build(recipe_hash(variant=variant), say, force=force, variant=variant)


def _refuse_if_used(folder: Path) -> None:
    """A rebuild replaces the folder's disk.qcow2 in place, and a machine's disk is a qcow2 overlay that names
    that file: its filesystem would then sit on other bytes. So --force is refused while a machine uses it."""
    here = sorted(d for d in _overlays_here() if _backing_folder(d) == folder.resolve())
    # This home's machines first: they are the ones the user can delete from here.
    users = here + sorted(set(image_users(folder)) - set(here))
    if users:
        listed = ", ".join(str(u) for u in users[:5]) + (" …" if len(users) > 5 else "")
        raise PymachineError(
            f"the image {folder.name[:12]} is the base disk of {len(users)} machine disk(s): {listed}; "
            "rebuilding it would change the bytes under their filesystems",
            hint="delete those machines first (pymachine delete NAME), then: pymachine image build --force",
        )


def qcow2_backing_file(disk: Path) -> str | None:
    """The backing file named in a qcow2 header (None for a standalone disk or another format)."""
    try:
        with open(disk, "rb") as fh:
            header = fh.read(20)
            if len(header) < 20 or header[:4] != b"QFI\xfb":
                return None
            offset, size = struct.unpack(">QI", header[8:20])
            if not offset or not size:
                return None
            fh.seek(offset)
            return fh.read(size).decode(errors="replace")
    except OSError:
        return None


def _overlays_here() -> list[Path]:
    machines = paths.machines_dir()
    return list(machines.rglob("*.qcow2")) if machines.exists() else []


def _backing_folder(disk: Path) -> Path | None:
    backing = qcow2_backing_file(disk)
    return Path(backing).resolve().parent if backing else None


def register_user(base_disk: str | Path, overlay: Path) -> None:
    """Note in the image folder that `overlay` (a machine's disk) is built on it. Machines of every
    PYMACHINE_HOME that shares this cache leave such a note, so `image prune` and `image build --force` see
    them all, not only this home's. A note whose disk is gone (machine deleted) is ignored and removed."""
    users = Path(base_disk).parent / "users"
    users.mkdir(exist_ok=True)
    note = users / hashlib.sha256(str(overlay.resolve()).encode()).hexdigest()[:24]
    note.write_text(str(overlay.resolve()) + "\n")


def image_users(folder: Path) -> set[Path]:
    """Machine disks (of any home) that are overlays on the image in `folder`."""
    found: set[Path] = set()
    users = folder / "users"
    for note in users.iterdir() if users.is_dir() else []:
        disk = Path(note.read_text().strip())
        if disk.exists() and _backing_folder(disk) == folder.resolve():
            found.add(disk)
        else:
            note.unlink(missing_ok=True)
    return found


def images_in_use() -> set[Path]:
    """Image folders that a machine disk uses: this home's (found by their qcow2 headers) and any other home's
    that share this cache (the notes of register_user)."""
    used = {f for f in map(_backing_folder, _overlays_here()) if f is not None}
    cache = paths.image_cache_dir()
    for folder in cache.iterdir() if cache.is_dir() else []:
        if folder.is_dir() and image_users(folder):
            used.add(folder.resolve())
    return used


def prune_images(min_age_seconds: float = 3600) -> list[Path]:
    """Delete cached images other than the current recipe's, except those a machine of this home uses and
    those built in the last `min_age_seconds` (a machine of another PYMACHINE_HOME may have just started
    on one: those are invisible from here). Returns the removed folders."""
    cache = paths.image_cache_dir()
    if not cache.exists():
        return []
    keep = {image_dir().resolve(), *images_in_use()}
    keep |= {image_dir(recipe_hash(variant=v)).resolve() for v in VARIANTS}
    removed = []
    with build_lock():
        for folder in sorted(cache.iterdir()):
            if not folder.is_dir() or folder.name.startswith(".") or folder.resolve() in keep:
                continue
            if time.time() - folder.stat().st_mtime < min_age_seconds:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
