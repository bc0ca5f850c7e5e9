"""Room for the engine's own state on a full disk.

Containers write to the same filesystem as the engine's records (their layers, volumes and logs live under the
state folder), and they run as root, so ext4's blocks reserved for root do not keep them out. When a container
fills the disk, the engine must still be able to record an exit, a removal, its own id at the next start —
else `docker rm` fails and the agent crash-loops at start. So the state folder holds `.reserve`, a file of
RESERVE_BYTES allocated while there is room, and given back when a write of the engine's own state meets
ENOSPC (atomic.write_bytes calls `release_for`) or when the agent starts on a nearly full disk. It is
allocated again as soon as there is room: at the next start, and after the first write of the engine's own
state (atomic.write_bytes calls `rearm_released`) that finds LOW_WATER free again, e.g. once `docker rm` has
freed the filler's space. Before that, one agent gave it back once and never again had it: a second container
filling the disk found no reserve, and `docker rm` of that container failed with ENOSPC (it records
"removing" before it deletes), so no command could free the space.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("pymachine_agent.reserve")
NAME = ".reserve"
RESERVE_BYTES = 32 * 1024 * 1024
LOW_WATER = 2 * RESERVE_BYTES  # below this much free space at start, the reserve is given back
_released: set[Path] = set()  # state folders whose reserve this process gave back: armed again with room
_lock = threading.Lock()


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def arm(state_dir: Path) -> None:
    """At agent start: allocate the reserve if there is room, give it back if the disk is nearly full."""
    path = state_dir / NAME
    try:
        free = free_bytes(state_dir)
        if free < LOW_WATER:
            with _lock:
                _released.add(state_dir)
            if path.exists():
                path.unlink()
                log.warning(
                    "the disk of %s is nearly full: released the %d MiB reserve",
                    state_dir,
                    RESERVE_BYTES >> 20,
                )
            return
        if not (path.exists() and path.stat().st_size >= RESERVE_BYTES):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        with _lock:
            _released.discard(state_dir)
    except OSError as exc:
        path.unlink(missing_ok=True)
        log.warning("no space reserve for the engine's state in %s: %s", state_dir, exc)


def release_for(target: str) -> bool:
    """Give back the reserve of the state folder that holds `target` (the nearest `.reserve` above it); True
    if one was released, so the caller may try its write once more."""
    folder = Path(target).resolve().parent
    for candidate in (folder, *folder.parents):
        path = candidate / NAME
        try:
            if path.stat().st_size != RESERVE_BYTES:  # not one of ours
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            return False
        with _lock:
            _released.add(candidate)
        log.warning(
            "disk full: released the engine's %d MiB reserve (%s) to write %s",
            RESERVE_BYTES >> 20,
            path,
            target,
        )
        return True
    return False


def rearm_released() -> None:
    """After a write of the engine's state: allocate again each reserve given back, where the disk has room
    again (arm checks). Costs nothing while no reserve was given back."""
    if not _released:
        return
    with _lock:
        folders = list(_released)
    for folder in folders:
        try:
            room = free_bytes(folder) >= LOW_WATER
        except OSError:
            continue
        if room:
            arm(folder)
            if (folder / NAME).exists():
                log.info("disk space is back: the engine's reserve in %s is allocated again", folder)
