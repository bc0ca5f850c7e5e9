"""Which shares may lie inside which, and what the VM must do about a sync share inside a live one.

Live shares never nest: two devices (or two sshfs mounts) for one subtree would show the same host files
twice with two caches. One nesting is allowed, because it is how a Docker Desktop user works: a sync share
(a copy on the VM's disk, `mount add NAME $HOME/src/app --sync`) inside a read-write live share (the default
home share). In the VM the sync copy is then bind-mounted over that sub-path of the live share, so a
container that binds the sub-path, or the whole home (`-v $HOME:/h`, a recursive bind), sees the copy there.
That costs the VM an order: the save's quiesce unmounts the inner bind before the outer share, and after a
resume the guest's sync side binds the copy only once the outer share is mounted again
(pymachine_agent/syncshare.py `--outer`). The host agent's change events for the live share leave out every
path under a sync share: the sync carries those, and an event there would race it (hostagent/fswatch.py).

Refused, each with why: a live share inside a sync share (the copy's bind would hide it), a sync share
inside another sync share (two copies of one subtree), and a sync share inside a read-only share (the sync
writes what containers change back to the host: the folder would no longer be read-only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ShareLike(Protocol):
    path: str
    readonly: bool
    sync: bool


def within(path: str, parent: str) -> bool:
    """`path` is `parent` or lies below it (by name: both normalised absolute paths)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def clash(new: ShareLike, other: ShareLike) -> str | None:
    """Why `new` may not sit beside `other` (one inside the other, or the same path); None when it may."""
    if new.path == other.path:
        return f"'{new.path}' is already shared"
    if within(new.path, other.path):
        inner, outer = new, other
    elif within(other.path, new.path):
        inner, outer = other, new
    else:
        return None
    where = f"'{inner.path}' lies inside the share {outer.path}" if inner is new else (
        f"'{new.path}' holds the share {inner.path}")  # fmt: skip
    if inner.sync and outer.sync:
        return f"{where} (a sync share inside another sync share would copy one folder twice)"
    if outer.sync:
        return f"{where} (a live share inside a sync share would be hidden by the sync copy: move it out)"
    if inner.sync and outer.readonly:
        return (
            f"{where} (a sync share inside a read-only share would write to it: share "
            f"{outer.path} read-write, or put the sync share elsewhere)"
        )
    if inner.sync:
        return None  # the one nesting allowed: a sync copy bound over a sub-path of a read-write live share
    # two live shares: the message older versions gave, so a person finds what to do
    how = f"overlaps the share {other.path}"
    return f"'{new.path}' {how} (shares may not be nested; only a sync share may lie inside a live one)"


def nested_syncs(shares: Sequence[ShareLike]) -> list[tuple[str, str]]:
    """(sync share, the live share that holds it) for each sync share inside a live one, deepest first (the
    order to unmount them in; mount in the reverse order)."""
    out = []
    for s in shares:
        if not s.sync:
            continue
        outer = [o for o in shares if not o.sync and o.path != s.path and within(s.path, o.path)]
        if outer:
            out.append((s.path, max(outer, key=lambda o: len(o.path)).path))
    return sorted(out, key=lambda pair: (-pair[0].count("/"), pair[0]))


def sync_paths_within(shares: Sequence[ShareLike], outer: str) -> list[str]:
    """The sync shares that lie inside `outer` (a live share being plugged or unplugged)."""
    return [s.path for s in shares if s.sync and s.path != outer and within(s.path, outer)]
