"""What `docker commit` makes a layer of: a container's upper dir minus the mount-point placeholders.

The runtime leaves empty /etc/hostname, /etc/hosts, /etc/resolv.conf (and the dirs holding them) in the upper
dir only to bind-mount over them; Docker keeps those in a separate "-init" layer a commit leaves out. The
builder drops them with `build.rootfs.strip_mount_points`; commit uses the same function, but on a hard-linked
copy of the upper dir: a running container's upper dir must not change under its overlay mount (removing an
emptied upper /etc would make later writes to /etc fail inside the container). Hard links cost one inode
reference per entry, not the data; the copy sits next to the upper dir so it is on the same filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pymachine_agent.build.rootfs import strip_mount_points

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def committable_upper(upper: Path, parent_layers: list[Path]) -> Iterator[Path]:
    """A private hard-linked copy of `upper` with the placeholders stripped; removed on exit."""
    scratch = Path(tempfile.mkdtemp(dir=upper.parent, prefix=".commit-"))
    try:
        copy = scratch / "upper"
        src = os.open(upper, _DIR)
        try:
            link_tree(src, copy)
        finally:
            os.close(src)
        strip_mount_points(copy, parent_layers)
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def link_tree(src_fd: int, dst: Path) -> None:
    """Copy the tree at the directory fd `src_fd` to the new path `dst`: dirs recreated with their owner,
    mode, xattrs (overlay's opaque marker included) and times; everything else (files, symlinks, whiteout
    devices) hard-linked.

    A running container (`commit --pause=false`) changes its upper dir while this runs, so every entry is
    reached from its parent's fd: a directory is opened O_NOFOLLOW (a symlink swapped in is hard-linked as
    the symlink it now is, never walked through) and linkat never follows. The copy is ours alone, so the
    layer writer that reads it next sees nothing but what this took from the container."""
    os.mkdir(dst, 0o700)
    stack = [(os.dup(src_fd), dst)]
    done: list[tuple[int, Path]] = []  # metadata goes on last, deepest first: adding entries moves mtimes
    try:
        while stack:
            sfd, dpath = stack.pop()
            done.append((sfd, dpath))
            for name in os.listdir(sfd):
                child = _link_entry(sfd, name, dpath / name)
                if child is not None:
                    stack.append((child, dpath / name))
        for sfd, dpath in reversed(done):
            _copy_dir_meta(sfd, dpath)
    finally:
        for sfd, _ in done + stack:
            os.close(sfd)


def _link_entry(parent_fd: int, name: str, dst: Path) -> int | None:
    """Hard-link `name` into the copy; for a directory make its copy and return its fd (walked next)."""
    for _ in range(3):  # an entry the container keeps swapping: take what it is on one of the tries
        try:
            fd = os.open(name, _DIR, dir_fd=parent_fd)
        except FileNotFoundError:
            return None  # gone since the listing
        except OSError as err:
            if err.errno not in (errno.ENOTDIR, errno.ELOOP):  # not a directory (ELOOP: a symlink)
                raise
            try:
                os.link(name, dst, src_dir_fd=parent_fd, follow_symlinks=False)
                return None
            except FileNotFoundError:
                return None
            except PermissionError:
                continue  # linkat refuses directories: it became one again
        os.mkdir(dst, 0o700)
        return fd
    return None


def _copy_dir_meta(src_fd: int, dst: Path) -> None:
    st = os.fstat(src_fd)
    dfd = os.open(dst, _DIR)
    try:
        _copy_xattrs(src_fd, dfd)
        os.fchown(dfd, st.st_uid, st.st_gid)
        os.fchmod(dfd, st.st_mode & 0o7777)
        # last: adding the entries moved the mtime; the layer records the original one
        os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(dfd)


def _copy_xattrs(src_fd: int, dst_fd: int) -> None:
    try:
        names = os.listxattr(src_fd)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst_fd, name, os.getxattr(src_fd, name))
