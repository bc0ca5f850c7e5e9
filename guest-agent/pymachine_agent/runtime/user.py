"""user[:group] resolution the way Docker does it: names from the container's /etc/passwd and /etc/group,
numbers taken as they are, HOME from passwd (or "/")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExecUser:
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    home: str = "/"


def _read(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve(user: str, root: str | Path = "/", group_add: list[str] | None = None) -> ExecUser:
    """Resolve `user` ("", "name", "uid", "name:group", "uid:gid") against the rootfs at `root`.
    Raises LookupError with Docker's wording when a name is unknown."""
    root = Path(root)
    passwd = _read(root / "etc/passwd")
    groups = _read(root / "etc/group")
    name, _, group = (user or "0").partition(":")
    out = ExecUser()
    entry = next((p for p in passwd if len(p) >= 7 and (p[0] == name or p[2] == name)), None)
    if entry is not None:
        out.uid, out.gid, out.home = int(entry[2]), int(entry[3]), entry[5] or "/"
        uname = entry[0]
    elif name.isdigit():
        out.uid, uname = int(name), ""  # gid stays 0, as runc does for a uid without a passwd entry
    else:
        raise LookupError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        g = next((e for e in groups if len(e) >= 3 and (e[0] == group or e[2] == group)), None)
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
        g = next((e for e in groups if len(e) >= 3 and (e[0] == extra or e[2] == extra)), None)
        if g is not None:
            out.groups.append(int(g[2]))
        elif extra.isdigit():
            out.groups.append(int(extra))
        else:
            raise LookupError(f"unable to find group {extra}: no matching entries in group file")
    return out
