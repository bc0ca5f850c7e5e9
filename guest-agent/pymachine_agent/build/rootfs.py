"""File steps (COPY/ADD): a writable view of the parent image, and Docker's copy rules into it.

The view is an overlay mount of the parent's layers with a fresh upper dir, so what a COPY writes lands in
the upper dir exactly as a RUN's changes do (whiteouts and copy-ups included) and the image store's commit
turns it into a layer. Every destination path is resolved with the image's symlinks taken as if the rootfs
were `/`, so an image symlink can never send a write outside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pymachine_agent.runtime import libc
from pymachine_agent.runtime.mounts import mount_overlay

from .context import ContextError, resolve_in_root


@dataclass
class Workspace:
    upper: Path  # what becomes the layer
    rootfs: Path  # the merged view to write through


def unique_layers(layers: list[Path]) -> list[Path]:
    """Drop repeated layers (lowest first), keeping each one's topmost place: overlayfs refuses a lowerdir
    that appears twice (ELOOP), and since the top copy shadows everything the lower copy had, the view is
    the same. Images repeat layers when two steps produce identical diffs (e.g. two empty ones)."""
    seen: set[Path] = set()
    out: list[Path] = []
    for layer in reversed(layers):
        if layer not in seen:
            seen.add(layer)
            out.append(layer)
    return out[::-1]


@contextlib.contextmanager
def writable_rootfs(scratch: Path, layers: list[Path]) -> Iterator[Workspace]:
    """Overlay of `layers` (lowest first) with `scratch`/upper; for an image without layers, upper itself."""
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(upper, 0o755)
    if not layers:
        yield Workspace(upper, upper)
        return
    mount_overlay([str(p) for p in unique_layers(layers)], str(upper), str(work), str(merged))
    try:
        yield Workspace(upper, merged)
    finally:
        libc.umount2(str(merged), libc.MNT_DETACH)


@contextlib.contextmanager
def readonly_rootfs(scratch: Path, layers: list[Path]) -> Iterator[Path]:
    """A read-only merged view of an image (COPY --from=image), for reading only."""
    layers = unique_layers(layers)
    if len(layers) == 1:
        yield layers[0]
        return
    merged = scratch / "ro"
    merged.mkdir(parents=True, exist_ok=True)
    if not layers:
        yield merged
        return
    data = "lowerdir=" + ":".join(str(p) for p in reversed(layers))
    libc.mount("overlay", str(merged), "overlay", libc.MS_RDONLY, data)
    try:
        yield merged
    finally:
        libc.umount2(str(merged), libc.MNT_DETACH)


@dataclass
class CopyOptions:
    uid: int | None = None  # None: 0 for context files, kept for --from sources
    gid: int | None = None
    mode: int | None = None  # --chmod
    keep_owner: bool = False  # sources from another image keep their owners unless --chown


def _owner(opts: CopyOptions, st: os.stat_result) -> tuple[int, int]:
    if opts.uid is not None:
        return opts.uid, opts.gid if opts.gid is not None else opts.uid
    if opts.keep_owner:
        return st.st_uid, st.st_gid
    return 0, 0


def make_dirs(rootfs: Path, rel: str, opts: CopyOptions) -> Path:
    """mkdir -p inside the rootfs; new directories get 0755 (or --chmod) and the copy's owner."""
    path = rootfs
    done: list[str] = []
    for part in [p for p in rel.split("/") if p]:
        done.append(part)
        path = resolve_in_root(rootfs, "/".join(done))
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
            os.chmod(path, opts.mode if opts.mode is not None else 0o755)
            uid, gid = (
                (opts.uid, opts.gid if opts.gid is not None else opts.uid) if opts.uid is not None else (0, 0)
            )
            os.chown(path, uid, gid)
        elif not path.is_dir():
            raise ContextError(
                f"cannot copy to {'/'.join(done)}: it exists in the image and is not a directory"
            )
    return path


def _copy_entry(src: Path, rootfs: Path, rel: str, opts: CopyOptions) -> None:
    """Copy `src` to `rel` inside the rootfs; every level is re-resolved so image symlinks stay inside."""
    st = os.lstat(src)
    uid, gid = _owner(opts, st)
    if stat.S_ISDIR(st.st_mode):
        dst = resolve_in_root(rootfs, rel)
        if os.path.lexists(dst) and not dst.is_dir():
            os.unlink(dst)
        if not os.path.lexists(dst):
            os.mkdir(dst)
        os.chmod(dst, opts.mode if opts.mode is not None else stat.S_IMODE(st.st_mode))
        os.chown(dst, uid, gid)
        for name in sorted(os.listdir(src)):
            _copy_entry(src / name, rootfs, f"{rel}/{name}", opts)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    dst = resolve_in_root(rootfs, rel, follow_last=False)
    if os.path.lexists(dst):
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        else:
            os.unlink(dst)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        os.lchown(dst, uid, gid)
        return
    if not stat.S_ISREG(st.st_mode):
        return  # sockets, fifos, devices: Docker's COPY skips them too
    shutil.copyfile(src, dst, follow_symlinks=False)
    os.chmod(dst, opts.mode if opts.mode is not None else stat.S_IMODE(st.st_mode))
    os.chown(dst, uid, gid)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _is_archive(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink() and tarfile.is_tarfile(path)
    except OSError:
        return False


def _extract(archive: Path, rootfs: Path, at: str) -> None:
    """ADD's auto-extraction of a local tar (plain, gzip, bzip2, xz) into `at` of the rootfs."""
    from . import tarsafe

    try:
        with tarfile.open(archive, "r:*") as tar:
            tarsafe.extract(tar, rootfs, owners=True, at=at)
    except (tarfile.TarError, OSError, ContextError) as exc:
        raise ContextError(f"ADD could not extract {archive.name}: {exc}") from None


def copy_into(
    rootfs: Path,
    sources: list[Path],
    dest: str,
    workdir: str,
    opts: CopyOptions,
    *,
    extract: bool = False,
) -> None:
    """Docker's COPY/ADD rules: a directory's contents go into dest; a file goes to dest, or into dest when
    dest ends with "/" or is an existing directory; several sources need a directory dest ending in "/"."""
    if not dest.startswith("/"):
        dest = os.path.join(workdir or "/", dest)
    dest_is_dir = dest.endswith("/") or dest.endswith("/.")
    norm = os.path.normpath(dest).lstrip("/")
    if len(sources) > 1 and not dest_is_dir:
        raise ContextError(
            "When using COPY with more than one source file, the destination must be a directory and end "
            "with a /"
        )
    target = resolve_in_root(rootfs, norm) if norm not in ("", ".") else rootfs
    existing_dir = target.is_dir()
    for src in sources:
        if src.is_dir() and not src.is_symlink():
            make_dirs(rootfs, norm, opts)
            for name in sorted(os.listdir(src)):
                _copy_entry(src / name, rootfs, f"{norm}/{name}", opts)
        elif extract and _is_archive(src):
            base = make_dirs(rootfs, norm, opts)
            _extract(src, rootfs, str(base.relative_to(rootfs)))
        elif dest_is_dir or existing_dir:
            make_dirs(rootfs, norm, opts)
            _copy_entry(src, rootfs, f"{norm}/{src.name}", opts)
        else:
            make_dirs(rootfs, os.path.dirname(norm), opts)
            _copy_entry(src, rootfs, norm, opts)


# What the runtime creates in a container's upper dir only to mount over it (Docker keeps these in its
# separate "-init" layer, which a commit leaves out). Children before parents.
_MOUNT_POINTS = ("etc/hostname", "etc/hosts", "etc/resolv.conf", "etc", "dev", "proc", "sys")


def strip_mount_points(upper: Path, parent_layers: list[Path]) -> None:
    """Drop the empty mount-point files a RUN container left in its upper dir unless the parent image has
    them (then they are the image's, not placeholders), and the empty dirs copied up to hold them."""
    for rel in _MOUNT_POINTS:
        path = upper / rel
        # `etc` may be a symlink the container made (to the guest's /etc, as it reads from here): never
        # look, let alone unlink, through it
        if path.parent.is_symlink() or not os.path.lexists(path) or path.is_symlink():
            continue
        if path.is_dir():
            # an empty, non-opaque upper dir changes nothing but an mtime: always safe to drop
            opaque = _getxattr(path, "trusted.overlay.opaque") == b"y"
            if not opaque and not any(path.iterdir()):
                path.rmdir()
        elif (
            path.is_file()
            and path.stat().st_size == 0
            and not any(os.path.lexists(layer / rel) for layer in parent_layers)
        ):
            path.unlink()


def _getxattr(path: Path, name: str) -> bytes:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return b""
