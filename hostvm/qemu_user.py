"""The unprivileged user QEMU runs as when pymachine itself runs as root, and the file access it is given.

QEMU parses guest-controlled device state all day; a QEMU escape must not be root of the host. A person
running pymachine as themselves already gets a QEMU of their own uid (qemu:///session, or direct QEMU),
and nothing here applies. Run as root, the direct-QEMU driver starts QEMU with `-runas pymachine-qemu`, a
system user of our own, created on first use as Docker creates `dockremap` for userns-remap (and by
packaging/install.sh); under qemu:///system the domain names libvirt's own QEMU user (`libvirt-qemu`) in a
static DAC label, since libvirt's per-domain files are open to that user only.

What it may open is granted with POSIX ACL entries for that one user, never by changing owners or modes: read
the kernel, initrd and base disk, read the seed, read and write the machine's disk, and search (x, not read)
each folder above them. Every other file of the user's, the machine's SSH client key included, stays closed.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import proc
from .errors import PymachineError

if TYPE_CHECKING:
    import pwd

USER = "pymachine-qemu"
LIBVIRT_USERS = ("libvirt-qemu", "qemu")
R, W, X = 4, 2, 1

# Linux's POSIX ACL xattr (include/uapi/linux/posix_acl_xattr.h): a version header, then (tag, perm, id).
ACL_XATTR = "system.posix_acl_access"
ACL_VERSION = 2
USER_OBJ, NAMED_USER, GROUP_OBJ, NAMED_GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def _getpwnam(name: str) -> pwd.struct_passwd:
    import pwd  # POSIX only: this module is imported everywhere, used only where QEMU would run as root

    return pwd.getpwnam(name)


def needed() -> bool:
    """True when QEMU would otherwise run as root: pymachine itself runs as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def account() -> Account:
    """The direct-QEMU user, created (a system user with no home, no shell, in group kvm) when missing."""
    try:
        entry = _getpwnam(USER)
    except KeyError:
        _create()
        entry = _getpwnam(USER)
    return _checked(entry)


def libvirt_account() -> Account:
    """libvirt's own QEMU user (Debian `libvirt-qemu`, Fedora `qemu`), named explicitly in the domain so that
    a `user = "root"` in qemu.conf cannot apply. Not pymachine-qemu: libvirt keeps each domain's private files
    (master-key.aes, monitor socket) under /var/lib/libvirt/qemu, which only its own user may enter."""
    for name in LIBVIRT_USERS:
        try:
            return _checked(_getpwnam(name))
        except KeyError:
            continue
    raise PymachineError(
        f"none of libvirt's QEMU users ({', '.join(LIBVIRT_USERS)}) exists",
        hint="reinstall libvirt-daemon-system, or create the machine with --driver qemu",
    )


def _checked(entry: pwd.struct_passwd) -> Account:
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise PymachineError(
            f"the user {USER} has uid or gid 0: QEMU would run as root", hint=f"userdel {USER}"
        )
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create() -> None:
    if not shutil.which("useradd"):
        raise PymachineError(
            f"QEMU must not run as root, and the user {USER} to run it as is missing",
            hint=f"create it: useradd --system --user-group --shell /usr/sbin/nologin {USER}",
        )
    groups = ["--groups", "kvm"] if _group_exists("kvm") else []  # /dev/kvm is root:kvm 0660
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
    proc.run([*argv, "--shell", "/usr/sbin/nologin", *groups, USER], timeout=60)


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def grant(who: Account, readable: Iterable[str | Path], writable: Iterable[str | Path]) -> None:
    """Let `who` open these files (and search every folder above them); nothing else changes."""
    for path, perm in [*((Path(p), R) for p in readable), *((Path(p), R | W) for p in writable)]:
        if not path.exists():
            continue
        _allow(path, who, perm)
        for parent in path.resolve().parents:
            _allow(parent, who, X)


def grant_folder(who: Account, folder: str | Path) -> None:
    """Let `who` create files in `folder` (rwx) and search every folder above it (a share owner's virtiofsd
    creating its socket in a root-owned machine folder)."""
    path = Path(folder)
    _allow(path, who, R | W | X)
    for parent in path.resolve().parents:
        _allow(parent, who, X)


def _allow(path: Path, who: Account, perm: int) -> None:
    st = os.stat(path)
    if _permits(st, who, perm):
        return
    entries = _read_acl(path, st)
    mine = [e for e in entries if e[0] == NAMED_USER and e[2] == who.uid]
    if mine and mine[0][1] & perm == perm and any(t == MASK and p & perm == perm for t, p, _ in entries):
        return
    entries = [e for e in entries if e not in mine] + [
        (NAMED_USER, (mine[0][1] if mine else 0) | perm, who.uid)
    ]
    group_class = 0
    for tag, p, _ in entries:
        if tag in (NAMED_USER, GROUP_OBJ, NAMED_GROUP):
            group_class |= p
    entries = [e for e in entries if e[0] != MASK] + [(MASK, group_class, NO_ID)]
    entries.sort(key=lambda e: (e[0], e[2]))
    blob = _HEADER.pack(ACL_VERSION) + b"".join(_ENTRY.pack(*e) for e in entries)
    try:
        os.setxattr(path, ACL_XATTR, blob)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise PymachineError(
                f"cannot let {who.name} (QEMU's user) open {path}: its filesystem has no POSIX ACLs",
                hint="set PYMACHINE_HOME (and PYMACHINE_CACHE) to a folder on ext4, xfs, btrfs or tmpfs",
            ) from exc
        raise


def _permits(st: os.stat_result, who: Account, perm: int) -> bool:
    """Whether the mode bits alone already give `who` `perm` (ACL entries of others are not weighed)."""
    if st.st_uid == who.uid:
        return (st.st_mode >> 6) & perm == perm
    if st.st_gid == who.gid:
        return (st.st_mode >> 3) & perm == perm
    return st.st_mode & perm == perm


def _read_acl(path: Path, st: os.stat_result) -> list[tuple[int, int, int]]:
    """The file's ACL entries; a file without an ACL has the three that its mode bits stand for."""
    try:
        blob = os.getxattr(path, ACL_XATTR)
    except OSError:
        blob = b""
    if len(blob) >= _HEADER.size and _HEADER.unpack_from(blob)[0] == ACL_VERSION:
        return [_ENTRY.unpack_from(blob, off) for off in range(_HEADER.size, len(blob), _ENTRY.size)]
    mode = stat.S_IMODE(st.st_mode)
    return [(USER_OBJ, (mode >> 6) & 7, NO_ID), (GROUP_OBJ, (mode >> 3) & 7, NO_ID), (OTHER, mode & 7, NO_ID)]
