"""Base container images built from Debian packages: `pymachine/busybox` and `pymachine/debian`.

No public registry is reachable, so these feed the tests and the README demo. Each recipe lives in
`images/containers/<name>/` (recipe.json plus files); the output is a reproducible `docker save` archive
(single layer, fixed mtimes) cached as `paths.container_image_cache_dir()/<name>-<recipe hash>.tar`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from pymachine.images import CONTAINER_RECIPES

from . import locks, paths, proc
from .errors import NotFoundError, PymachineError
from .image_docker_archive import LayerWriter, image_config, write_docker_archive

Progress = Callable[[str], None]
BUILD_FORMAT = "1"  # bump when the builders change their output for the same recipe
BUILTIN_IMAGES: dict[str, str] = {"pymachine/busybox": "busybox", "pymachine/debian": "debian"}


def _recipe(folder: str) -> dict:  # type: ignore[type-arg]
    return json.loads((CONTAINER_RECIPES / folder / "recipe.json").read_text())


def parse_name(name: str) -> tuple[str, str, str]:
    """`pymachine/busybox[:tag]` → (repository, tag, recipe folder); unknown names and tags are errors."""
    repo, _, tag = name.partition(":")
    repo = repo.removeprefix("docker.io/")
    if repo not in BUILTIN_IMAGES:
        raise NotFoundError(
            f"'{name}' is not a built-in image",
            hint="built-in images: " + ", ".join(sorted(BUILTIN_IMAGES)),
        )
    folder = BUILTIN_IMAGES[repo]
    tags = _recipe(folder)["tags"]
    tag = tag or "latest"
    if tag not in tags:
        raise NotFoundError(f"'{repo}' has no tag '{tag}'", hint=f"tags: {', '.join(tags)}")
    return repo, tag, folder


def recipe_hash(folder: str) -> str:
    """sha256 over the recipe folder (paths, modes, contents) and the builder format."""
    root = CONTAINER_RECIPES / folder
    digest = hashlib.sha256(f"container\0{BUILD_FORMAT}\0{folder}\0".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_mode & 0o111:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def archive_path(name: str) -> Path:
    repo, _, folder = parse_name(name)
    return paths.container_image_cache_dir() / f"{repo.rsplit('/', 1)[-1]}-{recipe_hash(folder)[:16]}.tar"


def ensure_container_image(name: str, progress: Progress | None = None) -> Path:
    """The docker-archive tarball for a built-in image (all of its tags), building it if missing."""
    say = progress or (lambda message: None)
    repo, _, folder = parse_name(name)
    target = archive_path(name)
    if target.exists():
        return target
    cache = target.parent
    cache.mkdir(parents=True, exist_ok=True)
    with locks.held(cache / ".build.lock"):
        if target.exists():
            return target
        recipe = _recipe(folder)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            layer = work / "layer.tar"
            say(f"{repo}: building the root filesystem layer")
            builder = {"busybox": _busybox_layer, "mmdebstrap": _mmdebstrap_layer}[recipe["builder"]]
            diff_id = builder(recipe, CONTAINER_RECIPES / folder, work, layer)
            config = image_config(diff_id, recipe["config"], f"pymachine recipe images/containers/{folder}")
            tags = [f"{repo}:{t}" for t in recipe["tags"]]
            tmp = work / "image.tar"
            image_id = write_docker_archive(tmp, tags, layer, diff_id, config)
            os.replace(tmp, target)
            say(f"{repo}: {image_id[:19]} ({target.stat().st_size >> 20} MiB)")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _download_deb(package: str) -> Path:
    """The package's .deb from the Debian archive, kept in the cache (apt-get download, no install)."""
    debs = paths.container_image_cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        proc.require("apt-get")
        proc.run(["apt-get", "download", "-q", package], cwd=debs, timeout=300)
        found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        raise PymachineError(f"apt-get download {package} produced no .deb in {debs}")
    return found[-1]


def _busybox_layer(recipe: dict, folder: Path, work: Path, layer: Path) -> str:  # type: ignore[type-arg]
    deb = _download_deb(recipe["package"])
    unpacked = work / "deb"
    proc.run(["dpkg-deb", "-x", deb, unpacked], timeout=120)
    busybox = unpacked / "bin/busybox"
    if not busybox.exists():
        busybox = unpacked / "usr/bin/busybox"
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    applets = {p.strip().lstrip("/") for p in listing.split() if p.strip()}
    applets |= {"bin/sh"}
    overlay = folder / "rootfs"
    files = {p.relative_to(overlay).as_posix(): p for p in overlay.rglob("*") if p.is_file()}

    dirs = {"bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin",
            "var", "var/log", "var/tmp"}  # fmt: skip
    for path in [*applets, *files]:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        while parent:
            dirs.add(parent)
            parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
    modes = {"root": 0o700, "tmp": 0o1777, "var/tmp": 0o1777}
    entries: dict[str, Callable[[LayerWriter], None]] = {}
    for d in dirs:
        entries[d] = lambda w, d=d: w.directory(d, modes.get(d, 0o755))
    for applet in applets:
        if applet != "bin/busybox":
            entries[applet] = lambda w, a=applet: w.symlink(a, "/bin/busybox")
    entries["bin/busybox"] = lambda w: w.file("bin/busybox", busybox.read_bytes(), 0o755)
    for rel, src in files.items():
        mode = 0o755 if src.stat().st_mode & stat.S_IXUSR else 0o644
        entries[rel] = lambda w, r=rel, s=src, m=mode: w.file(r, s.read_bytes(), m)
    writer = LayerWriter(layer)
    for name in sorted(entries):
        entries[name](writer)
    return writer.close()


def _mmdebstrap_layer(recipe: dict, folder: Path, work: Path, layer: Path) -> str:  # type: ignore[type-arg]
    if os.geteuid() != 0:
        raise PymachineError(
            "building pymachine/debian needs root (mmdebstrap --mode=root)",
            hint="run 'sudo pymachine image build --containers' once; the result is cached",
        )
    raw = work / "rootfs.tar"
    argv: list[str | Path] = [
        "mmdebstrap", f"--variant={recipe['variant']}", "--mode=root", "--format=tar",
        '--aptopt=Acquire::Check-Valid-Until "false"', '--aptopt=Acquire::Check-Date "false"',
        *[f"--dpkgopt=path-exclude={p}" for p in recipe["dpkg_excludes"]],
        *([f"--include={','.join(recipe['include'])}"] if recipe["include"] else []),
        recipe["suite"], raw, *recipe["sources"],
    ]  # fmt: skip
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1704067200"}
    proc.run(argv, timeout=900, input=b"", env=env)
    # Re-emit with normalized metadata; device nodes are dropped (the runtime provides /dev).
    writer = LayerWriter(layer)
    with tarfile.open(raw, "r|") as src:
        for member in src:
            name = member.name.removeprefix("./").rstrip("/")
            if not name or (name.startswith("dev/") and (member.ischr() or member.isblk())):
                continue
            member.name = name
            if member.islnk():
                member.linkname = member.linkname.removeprefix("./")
            writer.add(member, src.extractfile(member) if member.isreg() else None)
    raw.unlink()
    return writer.close()
