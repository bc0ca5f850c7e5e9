"""Extract a tar into a folder as if that folder were `/`: nothing lands outside, symlinks stay as they are.

Why not `tarfile`'s extraction filters: Debian 12's Python 3.11.2 (the guest's) does not have them, and
their "tar"/"data" policies refuse absolute symlinks, which every root filesystem tarball has
(`bin/sh -> /bin/busybox`, the classic `FROM scratch` + `ADD rootfs.tar.gz /`). Here every member's parent
is resolved with symlinks taken inside the destination (chroot semantics), so a member written "through" a
symlink still stays inside.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from .context import ContextError, resolve_in_root


def _clean_name(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ContextError(f"archive member {name!r} has a path outside itself ('..')")
    return "/".join(parts)


def _clear(path: Path, keep_dir: bool) -> None:
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        if keep_dir:
            return
        shutil.rmtree(path)
    else:
        os.unlink(path)


def extract(tar: tarfile.TarFile, dest: Path, *, owners: bool, at: str = "") -> None:
    """Extract every member (in stream order) into `dest`/`at`, symlinks resolved with `dest` as `/` (so ADD
    into /opt of an image follows the image's links the way the container will see them). `owners`: keep the
    archive's uid/gid (ADD) rather than root (a build context: COPY sets owners itself). Device nodes and
    fifos are skipped."""
    dest.mkdir(parents=True, exist_ok=True)
    at = _clean_name(at)
    dir_times: list[tuple[Path, int]] = []
    for member in tar:
        name = _clean_name(member.name)
        if not name:
            continue
        full = f"{at}/{name}" if at else name
        parent = resolve_in_root(dest, os.path.dirname(full))
        path = parent / os.path.basename(full)
        if not parent.is_dir():
            if os.path.lexists(parent):
                raise ContextError(
                    f"archive member {member.name!r}: {os.path.dirname(name)} is not a directory"
                )
            parent.mkdir(parents=True, mode=0o755)
        mode = member.mode & 0o7777
        if member.isdir():
            _clear(path, keep_dir=True)
            path.mkdir(exist_ok=True)
            dir_times.append((path, int(member.mtime)))
        elif member.isreg():
            _clear(path, keep_dir=False)
            src = tar.extractfile(member)
            assert src is not None
            with src, open(path, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif member.issym():
            _clear(path, keep_dir=False)
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = resolve_in_root(dest, _clean_name(member.linkname), follow_last=False)
            if not os.path.lexists(target) or (target.is_dir() and not target.is_symlink()):
                raise ContextError(
                    f"archive member {member.name!r}: hard link to a missing file {member.linkname}"
                )
            _clear(path, keep_dir=False)
            os.link(target, path, follow_symlinks=False)
            continue  # a hard link shares the target's inode: its attributes are the target's
        else:
            continue
        if os.geteuid() == 0:  # (unit tests run unprivileged: owners are the caller's then)
            uid, gid = (member.uid, member.gid) if owners else (0, 0)
            os.lchown(path, uid, gid)
        if not member.issym():
            os.chmod(path, mode)
            os.utime(path, (member.mtime, member.mtime))
    for path, mtime in reversed(dir_times):  # children changed the dirs' mtimes: restore them last
        os.utime(path, (mtime, mtime))
