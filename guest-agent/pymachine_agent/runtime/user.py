"""user[:group] resolution the way Docker does it: names from the container's /etc/passwd and /etc/group,
numbers taken as they are, HOME from passwd (or "/").

The files belong to the image, and the engine reads them too (COPY --chown in a build, on the image's rootfs
seen from the VM): they are read through `inroot.read_regular`, so a symlink resolves inside the rootfs only
(an image's `/etc/passwd -> /etc/shadow` is the image's own shadow, never the VM's), a FIFO or a device is an
error instead of a read that never ends, and at most MAX_SIZE bytes are read.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path

from pymachine_agent import inroot

MAX_SIZE = 4 << 20  # bytes of /etc/passwd or /etc/group; real ones are a few kB


@dataclass
class ExecUser:
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    home: str = "/"


def _read(root: Path, path: str, fields: int, numeric: tuple[int, ...]) -> tuple[list[list[str]], str]:
    """The entries of the image's `path` with at least `fields` fields and digits in the `numeric` ones (a
    malformed line is skipped, as glibc does), and why the file could not be read ("" when it was, or does not
    exist: numeric ids work without it, as in runc)."""
    try:
        data = inroot.read_regular(str(root), path, MAX_SIZE)
    except FileNotFoundError:
        return [], ""
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return [], ""  # a path that cannot exist: as missing
        return [], f"cannot read {path} of the image: {exc.strerror or exc}"
    entries = []
    for line in data.decode(errors="replace").splitlines():
        entry = line.split(":")
        if (
            not line.startswith("#")
            and len(entry) >= fields
            and all(entry[i].isascii() and entry[i].isdigit() for i in numeric)
        ):
            entries.append(entry)
    return entries, ""


def _check(why: str, kind: str, name: str) -> None:
    """A name needs the file; a number does without it (HOME "/", no supplementary groups)."""
    if why and not (name.isascii() and name.isdigit()):
        raise LookupError(f"unable to find {kind} {name}: {why}")


def resolve(user: str, root: str | Path = "/", group_add: list[str] | None = None) -> ExecUser:
    """Resolve `user` ("", "name", "uid", "name:group", "uid:gid") against the rootfs at `root`.
    Raises LookupError with Docker's wording when a name is unknown."""
    root = Path(root)
    passwd, passwd_error = _read(root, "/etc/passwd", 7, (2, 3))
    groups, group_error = _read(root, "/etc/group", 3, (2,))
    name, _, group = (user or "0").partition(":")
    _check(passwd_error, "user", name)
    for g in ([group] if group else []) + list(group_add or []):
        _check(group_error, "group", g)
    out = ExecUser()
    entry = next((p for p in passwd if name in (p[0], p[2])), None)
    if entry is not None:
        out.uid, out.gid, out.home = int(entry[2]), int(entry[3]), entry[5] or "/"
        uname = entry[0]
    elif name.isdigit():
        out.uid, uname = int(name), ""  # gid stays 0, as runc does for a uid without a passwd entry
    else:
        raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        g = next((e for e in groups if group in (e[0], e[2])), None)
        if g is not None:
            out.gid = int(g[2])
        elif group.isdigit():
            out.gid = int(group)
        else:
            raise LookupError(f"unable to find group {group}: no matching entries in group file")
    else:
        # Supplementary groups of a named user, as /etc/group lists them.
        if uname:
            out.groups = [int(e[2]) for e in groups if len(e) >= 4 and uname in e[3].split(",")]
    for extra in group_add or []:
        g = next((e for e in groups if extra in (e[0], e[2])), None)
        if g is not None:
            out.groups.append(int(g[2]))
        elif extra.isdigit():
            out.groups.append(int(extra))
        else:
            raise LookupError(f"unable to find group {extra}: no matching entries in group file")
    return out
