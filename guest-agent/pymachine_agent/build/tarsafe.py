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
from collections.abc import Iterator
from pathlib import Path

from ..digest import sha256
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


def members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members; a stream that ends right after a member's data (no padding, no end blocks) is
    a complete archive, as Go's tar reader takes it: the docker CLI's `-f <outside Dockerfile>` rewrite
    sends exactly that (moby's ReplaceFileTarWrapper closes the pipe before the tar writer)."""
    it = iter(tar)
    seen = False
    while True:
        try:
            member = next(it)
        except StopIteration:
            return
        except tarfile.ReadError as exc:
            if seen and "unexpected end of data" in str(exc):
                return
            raise
        seen = True
        yield member


def extract(tar: tarfile.TarFile, dest: Path, *, owners: bool, at: str = "") -> dict[str, str]:
    """Extract every member (in stream order) into `dest`/`at`, symlinks resolved with `dest` as `/` (so ADD
    into /opt of an image follows the image's links the way the container will see them). `owners`: keep the
    archive's uid/gid (ADD) rather than root (a build context: COPY sets owners itself). Device nodes and
    fifos are skipped. Returns {path relative to dest: sha256 hex} of the regular files written, so the
    build cache need not read them again."""
    dest.mkdir(parents=True, exist_ok=True)
    at = _clean_name(at)
    dir_times: list[tuple[Path, int]] = []
    digests: dict[str, str] = {}
    parents: dict[str, Path] = {}  # resolved parent folders; forgotten whenever a member may change a path
    chown = os.geteuid() == 0  # (unit tests run unprivileged: owners are the caller's then)
    for member in members(tar):
        name = _clean_name(member.name)
        if not name:
            continue
        full = f"{at}/{name}" if at else name
        rel_parent = os.path.dirname(full)
        parent = parents.get(rel_parent)
        if parent is None:
            parent = resolve_in_root(dest, rel_parent)
            if not parent.is_dir():
                if os.path.lexists(parent):
                    raise ContextError(f"archive member {member.name!r}: {rel_parent} is not a directory")
                parent.mkdir(parents=True, mode=0o755)
            parents[rel_parent] = parent
        path = parent / os.path.basename(full)
        mode = member.mode & 0o7777
        uid, gid = (member.uid, member.gid) if owners else (0, 0)
        if member.isdir():
            if os.path.lexists(path) and not path.is_dir():
                parents.clear()
            _clear(path, keep_dir=True)
            path.mkdir(exist_ok=True)
            dir_times.append((path, int(member.mtime)))
        elif member.isreg():
            if os.path.lexists(path):
                parents.clear()
                _clear(path, keep_dir=False)
            src = tar.extractfile(member)
            assert src is not None
            h = sha256()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with src, open(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                if chown and (owners or uid or gid):
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.utime(fd, (member.mtime, member.mtime))
            digests[full] = h.hexdigest()
            continue
        elif member.issym():
            parents.clear()
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
        if chown:
            os.lchown(path, uid, gid)
        if not member.issym():
            os.chmod(path, mode)
            os.utime(path, (member.mtime, member.mtime))
    for path, mtime in reversed(dir_times):  # children changed the dirs' mtimes: restore them last
        os.utime(path, (mtime, mtime))
    return digests
