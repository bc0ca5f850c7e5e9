"""Where `docker cp` finds a path of a stopped container that lies in one of its volumes or bind mounts.

A stopped container's files are served from a detached overlay of its layers (runtime/detached.py), which
has no mounts; dockerd mounts the volumes for the copy. Here the path is routed to the deepest volume or bind
whose target holds it, and the rest of the path is resolved below that mount's source with the source as `/`
(inroot's resolver, via the archive code), so a link in the volume cannot lead out of it.
"""

from __future__ import annotations

import os
import posixpath

from .runtime.mounts import SHARE_OPTION, open_bind_source
from .runtime.spec import Mount


def covering(mounts: list[Mount], path: str) -> tuple[Mount, str] | None:
    """The volume or bind mount whose target holds `path` (the deepest one), and the path below it. A
    trailing `/` or `/.` (docker cp: the folder's content) is kept on the rest."""
    norm = posixpath.normpath("/" + path)
    best: Mount | None = None
    for m in mounts:
        target = posixpath.normpath("/" + m.target)
        inside = norm == target or norm.startswith(target.rstrip("/") + "/")
        if m.type in ("bind", "volume") and inside and (best is None or len(target) > len(best.target)):
            best = m
    if best is None:
        return None
    rest = "/" + norm[len(posixpath.normpath("/" + best.target)) :].lstrip("/")
    for suffix in ("/.", "/"):
        if path.endswith(suffix):
            return best, rest.rstrip("/") + suffix
    return best, rest


def open_source(mount: Mount) -> int:
    """An O_PATH fd of the mount's source folder: a bind in a share is opened as the runtime binds it
    (open_bind_source: it cannot lead out of the share), a volume's folder as it is."""
    share = next((o[len(SHARE_OPTION) :] for o in mount.options if o.startswith(SHARE_OPTION)), "")
    if share:
        return open_bind_source(mount.source, share)
    return os.open(mount.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
