"""The guest's mount table as /proc/self/mountinfo gives it: each mount's point and filesystem type, in
mount order (a later entry at the same point lies on top of an earlier one). Standalone, stdlib only: the
engine (runtime/mounts.py) and the sync share's own process (syncshare.py) both read it."""

from __future__ import annotations

import re

_OCTAL = re.compile(r"\\([0-7]{3})")


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount; raises OSError when the table cannot be read."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields, _, rest = line.partition(" - ")
            if fields.count(" ") >= 5:
                out.append((_unescape(fields.split(" ", 5)[4]), rest.split(" ", 1)[0]))
    return out


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
