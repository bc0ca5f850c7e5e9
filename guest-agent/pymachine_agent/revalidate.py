"""Host paths in a virtiofs share taken afresh: the guest's cached name, attributes and file data dropped.

virtiofsd serves the shares with `cache=always` and a bounded timeout (hostvm/shares.py), so the guest's FUSE
trusts a name (which inode it is), its attributes and, with keep_cache, a file's pages for that long. A host
save by rename (vim, `sed -i`, IDEs), a delete or a folder rename would stay unseen that long. A FUSE server
could tell the kernel (FUSE_NOTIFY_INVAL_ENTRY), but QEMU 7.2's C virtiofsd has no notification queue; so the
guest does it for the paths the host agent reports changed (fsevents.py) and for bind sources when a
container is created or started.

The one way guest userspace has to make FUSE look one name up again: fuse_dentry_revalidate asks the server
afresh whenever the lookup carries LOOKUP_EXCL, i.e. `open(name, O_CREAT|O_EXCL)`. Done through a read-only
bind of the share, that open never creates anything (lookup_open: no write access, so EROFS for a missing
name; EEXIST for an existing one), but the kernel has still
- dropped the dentry when the host has no such name any more or another inode under it (a save by rename,
  a delete, a folder renamed away: the folder's cached subtree goes with it): the next lookup gets the host's;
- refreshed the inode's attributes from the LOOKUP reply: with auto_inval_data (virtiofsd asks for it) a
  changed mtime or size drops the file's cached pages (an in-place edit), and a folder's changed mtime drops
  its cached listing (cache=always caches READDIR);
- looked up afresh a name it had no inode for (virtiofsd answers a missing name with ENOENT, which FUSE never
  caches as a negative entry).
Each claim is checked on the guest kernel (Debian's 6.1) by tests/vm/test_shares_coherence.py.

The share's own root has no dentry in the share to revalidate: its attributes are re-read with
statx(AT_STATX_FORCE_SYNC). Links are never followed (a link's target is a path of its own).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterable

from . import mountinfo, shares  # shares imports this module: use shares.within at call time only
from .runtime import libc

log = logging.getLogger("pymachine_agent.revalidate")

FSTYPE = "virtiofs"  # the transport whose caches outlive a host change (sshfs keeps its own short cache)
# where the read-only binds live for the length of one call (never /tmp: in a machine that may be a share)
SCRATCH = "/run/pymachine"
# the ENOENT / EROFS a missing name gives, and what a component that is no folder (any more) gives
_MISSING = (errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES)


def plan(paths: Iterable[str], table: list[tuple[str, str]]) -> dict[str, set[str]]:
    """{share root: its paths relative to it} for the paths a virtiofs mount serves (pure: `table` is the
    mount table, (point, fstype) in mount order). A path under something mounted over the share (a sync
    share's copy bound inside the home share) is not virtiofs's and is left out."""
    out: dict[str, set[str]] = {}
    for raw in paths:
        path = os.path.normpath(raw)
        point, fstype = "", ""
        for p, f in table:  # the deepest mount holding the path; a later one at the same point is on top
            if shares.within(path, p) and len(p) >= len(point):
                point, fstype = p, f
        if fstype == FSTYPE:
            out.setdefault(point, set()).add(os.path.relpath(path, point))
    return out


def served(paths: list[str]) -> list[str]:
    """Those of `paths` that a virtiofs share serves in this VM (whose caches may hold them)."""
    try:
        table = mountinfo.mounts()
    except OSError:
        return []
    return [p for p in paths if plan([p], table)]


def refresh(paths: Iterable[str], quiet_errors: bool = True) -> int:
    """Take each of `paths` (host paths; each folder on the way too) afresh from the host. Returns how many
    names were looked up again. Paths outside a virtiofs share are left alone (a no-op off a machine)."""
    try:
        groups = plan(paths, mountinfo.mounts())
    except OSError:
        return 0
    done = 0
    for root, rels in groups.items():
        try:
            done += _refresh_share(root, rels)
        except OSError as exc:
            if not quiet_errors:
                raise
            log.warning("host changes under %s not taken afresh: %s", root, exc)
    return done


def _refresh_share(root: str, rels: set[str]) -> int:
    """Revalidate `rels` through a private read-only bind of the share at `root`, removed again at once."""
    scratch = tempfile.mkdtemp(prefix="fresh-", dir=SCRATCH if os.path.isdir(SCRATCH) else "/run")
    try:
        libc.mount(root, scratch, None, libc.MS_BIND)
        try:
            libc.mount(None, scratch, None, libc.MS_PRIVATE)
            ro = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV
            libc.mount(None, scratch, None, ro)
            if not os.statvfs(scratch).f_flag & os.ST_RDONLY:  # never an O_CREAT where it could create
                raise OSError(errno.EIO, f"the bind of {root} at {scratch} is not read-only")
            root_fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return _revalidate(root_fd, rels)
            finally:
                os.close(root_fd)
        finally:
            libc.umount2(scratch, libc.MNT_DETACH)
    finally:
        os.rmdir(scratch)


def _revalidate(root_fd: int, rels: set[str]) -> int:
    """Each path's components top-down (a folder before what it holds: a folder dropped takes its stale
    subtree along, and the names below are then looked up fresh), each name once."""
    seen: set[str] = set()
    for rel in sorted(rels):
        if rel == ".":
            libc.statx_force_sync(root_fd)  # FUSE asks for its attributes, whatever it had cached
            continue
        dir_fd, prefix = root_fd, ""
        try:
            parts = rel.split("/")
            for i, name in enumerate(parts):
                prefix = f"{prefix}/{name}" if prefix else name
                if prefix not in seen:
                    seen.add(prefix)
                    _lookup_again(dir_fd, name)
                if i == len(parts) - 1:
                    break
                try:  # down one folder, never through a link
                    nxt = os.open(
                        name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                    )
                except OSError as exc:
                    if exc.errno in _MISSING:
                        break  # gone, or no folder: nothing of the host's below it is cached any more
                    raise
                if dir_fd != root_fd:
                    os.close(dir_fd)
                dir_fd = nxt
        finally:
            if dir_fd != root_fd:
                os.close(dir_fd)
    return len(seen)


def _lookup_again(dir_fd: int, name: str) -> bool:
    """open(name, O_CREAT|O_EXCL) on the read-only bind: FUSE looks `name` up again. True if it exists."""
    try:
        fd = os.open(
            name, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
    except FileExistsError:
        return True
    except OSError as exc:
        if exc.errno in _MISSING:
            return False
        raise
    os.close(fd)  # cannot happen on a read-only mount, which _refresh_share checked
    raise OSError(errno.EIO, f"{name} was created through a read-only bind")
