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
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pymachine_agent.build.rootfs import strip_mount_points


@contextlib.contextmanager
def committable_upper(upper: Path, parent_layers: list[Path]) -> Iterator[Path]:
    """A private hard-linked copy of `upper` with the placeholders stripped; removed on exit."""
    scratch = Path(tempfile.mkdtemp(dir=upper.parent, prefix=".commit-"))
    try:
        copy = scratch / "upper"
        link_tree(upper, copy)
        strip_mount_points(copy, parent_layers)
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def link_tree(src: Path, dst: Path) -> None:
    """Copy the tree at `src` to `dst`: dirs recreated with their owner, mode, xattrs (overlay's opaque
    marker included) and times; everything else (files, symlinks, whiteout devices) hard-linked."""
    st = os.lstat(src)
    os.mkdir(dst)
    for entry in os.scandir(src):
        if entry.is_dir(follow_symlinks=False):
            link_tree(Path(entry.path), dst / entry.name)
        else:
            os.link(entry.path, dst / entry.name, follow_symlinks=False)
    _copy_xattrs(src, dst)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)
    # last: adding the entries above moved the mtime; the layer records the original one
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_xattrs(src: Path, dst: Path) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
